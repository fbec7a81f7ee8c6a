"""A user's model as users build it, as one flat graph of its layers.

The common transfer-learning model nests a whole keras.applications backbone as one layer
(``inputs -> MobileNetV2(include_top=False) -> GlobalAveragePooling2D -> Dense``), users write
Sequential models, and keras.applications puts ``Rescaling``/``Normalization`` at the input. Every
command that looks inside a network (the int8 report and ``--quantize mixed``, QAT and pruning,
``explain``, ``summary``, retrieval) needs the inner layers, so kerascnn flattens a loaded model once:

- :func:`flatten` inlines every nested Functional or Sequential model, to any depth, into one Functional
  model of copies of the same layers (same configs, same weights, same outputs; the model it reads is
  not changed). A layer keeps its name; a name taken by an earlier layer becomes ``{parent}_{name}``.
  Each layer's path in the original nesting (``mobilenetv2_1.00_160/block_13_project``) is kept on the
  flat model: :func:`layer_path`.
- :func:`resolve_layer` finds a layer by that path, by its flat name, or by the name of a nested model
  (its output layer), and names the choices when there is none.
- :func:`input_preprocessing` reads the ``Rescaling``/``Normalization`` layers at the input as one
  per-channel affine map, so an export knows the file takes raw pixels; :func:`fold_normalization`
  puts a (per-channel) mean/std into the graph as a ``Normalization`` layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import KerascnnError
from .keras_internals import inbound_nodes, producer, run_through_graph

PATHS_ATTR = "_kerascnn_paths"  # flat layer name -> path in the original nesting
MODELS_ATTR = "_kerascnn_nested"  # path of each nested model -> flat name of its output layer


class GraphError(KerascnnError, ValueError):
    """A model kerascnn cannot take apart, or a layer that is not in it; the message names it."""


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def is_nested(model) -> bool:
    """Whether ``model`` holds another model (at any depth) or is Sequential."""
    import keras

    return isinstance(model, keras.Sequential) or any(_is_model(layer) for layer in model.layers)


class _Flattener:
    """Runs a model's graph on new inputs: each plain layer is called as a copy of itself (same config,
    same weights), each nested model is inlined. The model it reads is left as it was."""

    def __init__(self):
        self.taken: set[str] = set()  # flat names in use
        self.clones: dict[int, object] = {}  # id(layer) -> its copy in the flat model
        self.paths: dict[str, str] = {}
        self.models: dict[str, str] = {}

    def run(self, model, inputs, prefix: str, where: str):
        import keras

        flat_in = keras.tree.flatten(inputs)
        if len(flat_in) != len(model.inputs):
            raise GraphError(
                f"{where}: the nested model '{model.name}' takes {len(model.inputs)} inputs and is given "
                f"{len(flat_in)}"
            )
        if isinstance(model, keras.Sequential):
            x = flat_in[0]
            for layer in model.layers:
                x = self.call(layer, (x,), {}, prefix, model.name, where)
            return x
        fn = lambda op: self._operation(op, prefix, model.name, where)  # noqa: E731
        return run_through_graph(model, flat_in if len(flat_in) > 1 else flat_in[0], fn)

    def _operation(self, op, prefix, parent, where):
        return lambda *args, **kwargs: self.call(op, args, kwargs, prefix, parent, where)

    def call(self, layer, args, kwargs, prefix, parent, where):
        if _is_model(layer):
            if len(layer.inputs) != 1:
                raise GraphError(
                    f"{where}: the nested model '{prefix}{layer.name}' takes {len(layer.inputs)} inputs; "
                    "kerascnn takes image classifiers with one image input, at the top and inside"
                )
            inputs = args[0] if args else kwargs.get("inputs")
            out = self.run(layer, inputs, f"{prefix}{layer.name}/", where)
            last = producer(out)
            if last is not None:
                self.models[f"{prefix}{layer.name}"] = last.name
            return out
        kwargs = {k: v for k, v in kwargs.items() if not (k == "mask" and v is None)}
        clone = self.clones.get(id(layer))
        if clone is not None:  # a shared layer, called again
            return clone(*args, **kwargs)
        config = layer.get_config()
        config["name"] = self._name(layer.name, prefix, parent)
        try:
            clone = type(layer).from_config(config)
            out = clone(*args, **kwargs)
            clone.set_weights(layer.get_weights())
        except Exception as e:  # noqa: BLE001 - a layer that cannot be rebuilt from its config: name it
            raise GraphError(
                f"{where}: layer '{prefix}{layer.name}' ({type(layer).__name__}) cannot be copied out of its "
                f"nested model ({type(e).__name__}: {e})"
            ) from None
        clone.trainable = layer.trainable
        self.clones[id(layer)] = clone
        return out

    def _name(self, name, prefix, parent) -> str:
        flat = name
        if flat in self.taken:
            base, n = f"{parent}_{name}", 2
            flat = base
            while flat in self.taken:
                flat, n = f"{base}_{n}", n + 1
        self.taken.add(flat)
        self.paths[flat] = f"{prefix}{name}"
        return flat


def flatten(model, where: str | None = None):
    """``model`` as one flat Functional model of its own layers (nested Functional and Sequential models
    inlined, to any depth); a flat Functional model comes back as it is. The result carries each layer's
    path in the original nesting (:func:`layer_path`). ``where`` (a file name) starts error messages."""
    import keras

    where = where or model.name
    if getattr(model, PATHS_ATTR, None) is not None:
        return model
    if not is_nested(model):
        _mark(model, {layer.name: layer.name for layer in model.layers}, {})
        return model
    if not model.inputs:
        raise GraphError(f"{where}: the Sequential model has no input shape; build it with an Input first")
    flattener = _Flattener()
    flattener.taken.update(producer(inp).name for inp in model.inputs)
    inputs = [
        keras.Input(shape=tuple(inp.shape[1:]), dtype=inp.dtype, name=producer(inp).name)
        for inp in model.inputs
    ]
    outputs = flattener.run(model, inputs if len(inputs) > 1 else inputs[0], "", where)
    flat = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)
    for layer in flat.layers:
        flattener.paths.setdefault(layer.name, layer.name)
    _mark(flat, flattener.paths, flattener.models)
    return flat


def _mark(model, paths: dict, models: dict) -> None:
    object.__setattr__(model, PATHS_ATTR, paths)  # not a tracked attribute (Keras would try to save it)
    object.__setattr__(model, MODELS_ATTR, models)


def carry_paths(new_model, old_model):
    """``new_model`` (made of ``old_model``'s layers, and maybe new ones) with ``old_model``'s paths."""
    paths = dict(getattr(old_model, PATHS_ATTR, None) or {})
    for layer in new_model.layers:
        paths.setdefault(layer.name, layer.name)
    _mark(new_model, paths, dict(getattr(old_model, MODELS_ATTR, None) or {}))
    return new_model


def layer_path(model, name: str) -> str:
    """The path of flat layer ``name`` in the model it came from (its name, for a flat model)."""
    return (getattr(model, PATHS_ATTR, None) or {}).get(name, name)


def layer_paths(model) -> dict[str, str]:
    """Flat layer name -> path, for every layer of ``model`` (flattened or flat)."""
    paths = getattr(model, PATHS_ATTR, None) or {}
    return {layer.name: paths.get(layer.name, layer.name) for layer in model.layers}


def resolve_layer(model, name: str, what: str = "--layer"):
    """The layer of (flattened) ``model`` called ``name``: its path (``mobilenetv2_1.00_160/out_relu``),
    its flat name, or the name/path of a nested model (then its output layer)."""
    by_name = {layer.name: layer for layer in model.layers}
    if name in by_name:
        return by_name[name]
    paths = getattr(model, PATHS_ATTR, None) or {}
    for flat_name, path in paths.items():
        if path == name and flat_name in by_name:
            return by_name[flat_name]
    nested = getattr(model, MODELS_ATTR, None) or {}
    for path, out_name in nested.items():
        if name in (path, path.rsplit("/", 1)[-1]) and out_name in by_name:
            return by_name[out_name]
    matches = [flat for flat, path in paths.items() if path.endswith(f"/{name}") and flat in by_name]
    if len(matches) == 1:
        return by_name[matches[0]]
    listed = [layer_path(model, layer.name) for layer in model.layers[-8:]]
    raise GraphError(
        f"{what} {name}: no such layer in {model.name} (give a layer name or its path inside a nested "
        f"model; the last layers are {', '.join(listed)})"
    )


# ------------------------------------------------------------------------------------------------
# Preprocessing at the input
# ------------------------------------------------------------------------------------------------


@dataclass
class Preprocessing:
    """The Rescaling/Normalization layers at a model's input as ``y = x * scale + offset`` per channel."""

    layers: list[str]
    scale: np.ndarray
    offset: np.ndarray

    @property
    def mean(self) -> list[float]:
        """The mean of ``(x - mean) / std`` that the layers compute, per channel."""
        return [float(v) for v in -self.offset / self.scale]

    @property
    def std(self) -> list[float]:
        return [float(v) for v in 1.0 / self.scale]

    def describe(self, model) -> str:
        names = ", ".join(layer_path(model, n) for n in self.layers)
        return f"{names} (mean {_fmt(self.mean)}, std {_fmt(self.std)})"


def _fmt(values) -> str:
    values = [round(v, 4) for v in values]
    return str(values[0]) if len(set(values)) == 1 else str(values)


PREPROCESSING_LAYERS = ("Rescaling", "Normalization")


def input_preprocessing(model) -> Preprocessing | None:
    """The chain of Rescaling/Normalization layers right after the one image input of (flattened)
    ``model``, read as one per-channel affine map, or None when the model starts with anything else."""
    import keras

    if len(model.inputs) != 1 or len(model.input_shape) != 4:
        return None
    tensor, chain = model.inputs[0], []
    consumers = _consumers(model)
    while True:
        nexts = consumers.get(id(tensor), [])
        if len(nexts) != 1 or type(nexts[0][0]).__name__ not in PREPROCESSING_LAYERS:
            break
        layer, out = nexts[0]
        chain.append(layer.name)
        tensor = out
    if not chain:
        return None
    channels = int(model.input_shape[-1])
    by_name = {layer.name: layer for layer in model.layers}
    x = np.stack([np.zeros((1, 1, channels)), np.ones((1, 1, channels)), np.full((1, 1, channels), 255.0)])
    y = keras.ops.convert_to_tensor(x.astype(np.float32))
    for name in chain:  # the layers alone, on three 1x1 probes (0, 1 and 255 in every channel)
        y = by_name[name](y)
    y = np.asarray(keras.ops.convert_to_numpy(y), np.float64).reshape(3, -1)
    offset, scale = y[0], y[1] - y[0]
    if y.shape[1] != channels or not np.allclose(y[2], offset + 255 * scale, rtol=1e-4, atol=1e-4):
        return None  # not a per-channel affine map: left to the model
    if np.any(scale == 0):
        return None
    return Preprocessing(chain, scale, offset)


def _consumers(model) -> dict[int, list]:
    """id(KerasTensor) -> [(layer, its output)] for the layers of ``model`` that take that tensor alone."""
    found: dict[int, list] = {}
    for layer in model.layers:
        for node in inbound_nodes(layer):
            if len(node.input_tensors) == 1 and len(node.output_tensors) == 1:
                found.setdefault(id(node.input_tensors[0]), []).append((layer, node.output_tensors[0]))
    return found


def is_identity(mean, std) -> bool:
    """Whether ``(x - mean) / std`` leaves pixels as they are."""
    return all(abs(m) < 1e-6 for m in mean) and all(abs(s - 1) < 1e-6 for s in std)


def fold_normalization(model, mean, std, name: str = "input_normalization"):
    """``model`` behind a Normalization layer that computes ``(x - mean) / std`` (per channel, or one
    value for all): the same layers, so the new model takes raw pixels. The input keeps its name."""
    import keras

    (inp,) = model.inputs
    channels = int(model.input_shape[-1])
    mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(std, np.float32), (channels,))
    image = keras.Input(shape=tuple(inp.shape[1:]), dtype=inp.dtype, name=producer(inp).name)
    norm = keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name=name)
    outputs = run_through_graph(model, [norm(image)], lambda layer: layer)
    return carry_paths(keras.Model(image, outputs, name=model.name), model)
