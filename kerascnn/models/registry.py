"""One registry for the whole zoo, in the manner of ``timm``.

A family has one generic builder (``ResNet``, ``VGG``, ``_densenet``, ...); each named variant is a
fixed configuration of it, registered with :func:`register_variant` at module level
(``resnet20 = register_variant(CifarResNet, "resnet20", depth=20, ...)``). A builder that is a whole
architecture on its own (``lenet5``, ``mobilenet_v2``, or ``wrn`` for any depth) is registered with the
:func:`register_model` decorator, which ``register_variant`` also uses. Each entry records the family,
default input shape, default number of classes, the smallest input side, where the architecture comes
from and, where a paper or reference implementation gives one, its trainable parameter count, which
``tests/models/test_zoo.py`` checks. The CLI and the tests enumerate the registry
(``list_models("resnet*")``) instead of hard-coding lists, so adding a model is one registration.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from kerascnn.errors import ConfigError, KerascnnError


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    fn: Callable
    family: str
    input_shape: tuple  # default (H, W, C); H/W may be None for size-agnostic models
    num_classes: int  # default number of classes
    min_size: int  # smallest H and W the architecture accepts
    reference: str  # where the architecture (and its parameter count) comes from
    params: int | None = None  # trainable parameters of the default build, as the reference counts them
    paper: str | None = None  # the paper's figure in millions, as printed ("0.27"): the count rounds to it


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    family: str,
    input_shape: tuple = (224, 224, 3),
    num_classes: int = 1000,
    min_size: int = 32,
    reference: str = "",
    name: str | None = None,
    params: int | None = None,
    paper: str | None = None,
):
    """Decorator: put a builder into the registry under its function name (or ``name``)."""

    def decorator(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(
                f"model '{key}' is registered twice ({_REGISTRY[key].fn.__module__} and {fn.__module__})"
            )
        _REGISTRY[key] = ModelEntry(
            key, fn, family, tuple(input_shape), num_classes, min_size, reference, params, paper
        )
        fn.model_name = key
        return fn

    return decorator


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (``"resnet*"``), sorted."""
    names = [
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
    ]
    return sorted(names, key=_natural_key)


def list_families() -> list[str]:
    return sorted({e.family for e in _REGISTRY.values()})


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name raises a ``KeyError`` that lists close names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name) from None


def build(name: str, **kwargs):
    """Build a registered model by name: ``build("resnet20", input_shape=(32, 32, 3), num_classes=10)``."""
    return get_entry(name).fn(**kwargs)


class UnknownModelError(KerascnnError, KeyError):
    def __init__(self, name: str):
        self.name = name
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        if not close:  # prefix matches catch "resnet" -> resnet18, resnet20, ...
            close = [n for n in list_models() if n.startswith(name[:4])][:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        self.message = f"unknown model '{name}'.{hint} Run `kerascnn models` for the full list."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return self.message


def _natural_key(name: str):
    """Sort resnet20 before resnet110 and vgg11 before vgg16."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def register_variant(
    generic: Callable,
    name: str,
    *,
    family: str,
    input_shape: tuple,
    num_classes: int,
    min_size: int,
    reference: str = "",
    doc: str = "",
    params: int | None = None,
    paper: str | None = None,
    **fixed,
):
    """Register ``name`` as a fixed configuration of a family's generic builder.

    The generic builder is called as ``generic(name, **fixed, default_shape=input_shape,
    min_size=min_size, input_shape=..., num_classes=..., ...)``: it gets the registered default shape
    and minimum size for its argument checks. The family options it accepts (``batch_norm``,
    ``shortcut``, ...) pass through as keywords.
    """
    default_shape = tuple(input_shape)

    def builder(
        input_shape=None,
        num_classes: int = num_classes,
        include_top: bool = True,
        pooling=None,
        weights=None,
        classifier_activation="softmax",
        input_tensor=None,
        **options,
    ):
        pinned = [k for k in options if k in fixed]
        if pinned:  # the options that make this variant what it is
            raise ConfigError(
                f"{name} fixes {pinned[0]}={fixed[pinned[0]]!r}; its options: "
                f"{', '.join(option_names(name))} (another {pinned[0]} is another model: "
                f"kerascnn models --family {family})"
            )
        return generic(
            name,
            **fixed,
            default_shape=default_shape,
            min_size=min_size,
            input_shape=input_shape,
            num_classes=num_classes,
            include_top=include_top,
            pooling=pooling,
            weights=weights,
            classifier_activation=classifier_activation,
            input_tensor=input_tensor,
            **options,
        )

    builder.generic, builder.fixed = generic, fixed  # for option_names()
    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = generic.__module__
    builder.__doc__ = doc or generic.__doc__
    return register_model(family, input_shape, num_classes, min_size, reference, name, params, paper)(builder)


def option_names(name: str) -> list[str]:
    """The keyword options a registered model's builder takes (what ``--model-kwargs`` may set)."""
    import inspect

    fn = get_entry(name).fn
    internal = {"model_name", "default_shape", "min_size", "input_tensor", *getattr(fn, "fixed", {})}
    names: list[str] = []
    for f in (fn, getattr(fn, "generic", None)):
        if f is None:
            continue
        for p in inspect.signature(f).parameters.values():
            if (
                p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in internal
                and p.name not in names
            ):
                names.append(p.name)
    return names


def transfer_weights(target, source, skip=()) -> list[str]:
    """Copy weights layer by layer, by name, where the shapes agree; return the names copied.

    ``skip``: layers to leave as initialised (the classifier head, which belongs to the old task)."""
    copied = []
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            continue
        src_w = src.get_weights()
        if len(src_w) == len(layer.weights) and all(
            a.shape == tuple(b.shape) for a, b in zip(src_w, layer.weights, strict=True)
        ):
            layer.set_weights(src_w)
            copied.append(layer.name)
    return copied
