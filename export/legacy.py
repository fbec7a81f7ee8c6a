"""Keras 3 functional models rebuilt in legacy Keras (``tf_keras``), for tools that only take tf_keras.

tensorflow-model-optimization (QAT, pruning) accepts only tf_keras models. Rather than a second copy
of every architecture, :func:`to_tf_keras` reads the Keras 3 functional config (layers, their call
arguments and the graph), deserializes each layer with tf_keras, wires the same graph, copies the
weights layer by layer and checks that both models give the same outputs. It works for any functional
model made of standard Keras layers: the whole zoo, or a ``.keras`` / ``.h5`` file a user made.

:func:`from_tf_keras_weights` copies the weights back (after pruning, say), by layer name.

Importing this module does not import tf_keras; the functions do. Importing tf_keras alone leaves
``tf.keras`` as Keras 3 (only tensorflow-model-optimization switches the process to legacy Keras).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import nodes_by_depth, producer

__all__ = [
    "LegacyConversionError",
    "to_tf_keras",
    "from_tf_keras_weights",
    "layer_differences",
    "max_output_difference",
]

# Keyword arguments every tf_keras layer takes through ``Layer.__init__(**kwargs)``.
_TFK_BASE_KWARGS = {
    "name",
    "dtype",
    "trainable",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
}
# Options Keras 3 renamed: {layer class: {Keras 3 name: tf_keras name}}.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
# Config entries holding a serialized object (initializer, regularizer, constraint) rather than a value.
_OBJECT_KINDS = ("initializer", "regularizer", "constraint")


class LegacyConversionError(KerascnnError, ValueError):
    """A Keras 3 model cannot be rebuilt in tf_keras; the message names the layer and the reason."""


# ------------------------------------------------------------------------------------------------
# Config translation
# ------------------------------------------------------------------------------------------------


def _init_params(cls) -> tuple[dict[str, Any], bool]:
    """Named ``__init__`` parameters of ``cls`` and its bases (name -> default), and whether the chain
    ends in ``**kwargs`` that reach the base Layer."""
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            continue
        var_kw = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.setdefault(p.name, p.default)
        if not var_kw:
            return params, False
        if klass.__name__ == "Layer":
            return params, True
    return params, True


def _same_value(a, b) -> bool:
    if a is inspect.Parameter.empty or b is inspect.Parameter.empty:
        return False
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and other odd values: not the same
        return False


def _policy_name(value):
    """A Keras 3 dtype policy (dict or string) as the name tf_keras takes ("float32", "mixed_float16")."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
            return value.get("config", {}).get("name")
        raise LegacyConversionError(
            f"unsupported dtype policy {value!r} (quantized layers cannot be rebuilt)"
        )
    return value


def _tfk_object(key: str, value, where: str):
    """A Keras 3 serialized initializer / regularizer / constraint as a tf_keras object (or None)."""
    import tf_keras

    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        return value
    kind = next(k for k in _OBJECT_KINDS if key.endswith(k))
    module = {
        "initializer": tf_keras.initializers,
        "regularizer": tf_keras.regularizers,
        "constraint": tf_keras.constraints,
    }[kind]
    class_name = value["class_name"]
    cls = getattr(module, class_name, None)
    if cls is None:
        if kind == "initializer":  # weights are copied over, so an initializer never changes the result
            return None
        raise LegacyConversionError(
            f"{where}: {kind} '{class_name}' has no tf_keras equivalent; use a standard {kind}"
        )
    config = dict(value.get("config") or {})
    accepted, _ = _init_params(cls)
    for name in list(config):
        if name not in accepted:
            dropped = config.pop(name)
            if dropped not in (None, False, 0, (), []) and kind != "initializer":
                raise LegacyConversionError(
                    f"{where}: {kind} {class_name} option {name}={dropped!r} has no tf_keras equivalent"
                )
    return cls(**config)


def _layer_config(layer_spec: dict, tfk_cls, k3_cls) -> dict:
    """The Keras 3 layer config translated to what ``tfk_cls.__init__`` takes.

    Keys tf_keras does not know are dropped when they hold the Keras 3 default (``lora_rank=None``,
    ``synchronized=False``, ...); one that holds anything else would change behaviour, so it raises.
    """
    name = layer_spec.get("name") or layer_spec["config"].get("name")
    where = f"layer '{name}' ({layer_spec['class_name']})"
    config = dict(layer_spec["config"])
    for k3_key, tfk_key in _RENAMED.get(layer_spec["class_name"], {}).items():
        if k3_key in config:
            config[tfk_key] = config.pop(k3_key)
    if "dtype" in config:
        config["dtype"] = _policy_name(config["dtype"])
    accepted, base_kwargs = _init_params(tfk_cls)
    if base_kwargs:
        accepted = {**{k: None for k in _TFK_BASE_KWARGS}, **accepted}
    k3_defaults = _init_params(k3_cls)[0] if k3_cls is not None else {}
    out = {}
    for key, value in config.items():
        if key not in accepted:
            default = k3_defaults.get(key, inspect.Parameter.empty)
            if value is None or _same_value(value, default):
                continue
            hint = "" if default is inspect.Parameter.empty else f" (default {default!r})"
            raise LegacyConversionError(
                f"{where}: option {key}={value!r} has no tf_keras equivalent (tf_keras "
                f"{tfk_cls.__name__} does not take '{key}'), so the legacy model would compute something "
                f"else; rebuild the layer without it{hint}"
            )
        if any(key.endswith(kind) for kind in _OBJECT_KINDS):
            value = _tfk_object(key, value, where)
        out[key] = value
    return out


def _tfk_layer_class(class_name: str, where: str):
    import tf_keras

    cls = getattr(tf_keras.layers, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise LegacyConversionError(
            f"{where}: tf_keras has no layer '{class_name}'; only standard Keras layers can be rebuilt "
            "for quantization-aware training and pruning"
        )
    return cls


def _k3_layer_class(class_name: str):
    import keras

    cls = getattr(keras.layers, class_name, None)
    return cls if isinstance(cls, type) else None


# ------------------------------------------------------------------------------------------------
# Graph
# ------------------------------------------------------------------------------------------------


def _is_keras_tensor(obj) -> bool:
    return isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__"


def _history(ref) -> tuple[str, int, int]:
    """``[name, node, tensor]`` (config in/output lists) or a serialized keras tensor."""
    if _is_keras_tensor(ref):
        ref = ref["config"]["keras_history"]
    return ref[0], int(ref[1]), int(ref[2])


def _refs(obj) -> list[tuple[str, int, int]]:
    """Every tensor a node's call arguments refer to."""
    if _is_keras_tensor(obj):
        return [_history(obj)]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, list | tuple):
        return [r for v in obj for r in _refs(v)]
    return []


def _resolve(obj, tensors):
    if _is_keras_tensor(obj):
        return tensors[_history(obj)]
    if isinstance(obj, dict):
        return {k: _resolve(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_resolve(v, tensors) for v in obj]
    return obj


def _io_list(refs) -> list[tuple[str, int, int]]:
    """Config ``input_layers``/``output_layers``: one ``[name, node, tensor]`` or a list of them."""
    if refs and isinstance(refs[0], str):
        return [_history(refs)]
    return [_history(r) for r in refs]


def _call_kwargs(kwargs: dict, layer, where: str) -> dict:
    """Call keyword arguments for the tf_keras layer: Keras 3 records ``mask=None`` and the like."""
    accepted = set(inspect.signature(layer.call).parameters)
    out = {}
    for key, value in kwargs.items():
        if value is None:  # mask=None, training=None: the call's own default
            continue
        if key in accepted:
            out[key] = value
        elif value is not None and key != "training":
            raise LegacyConversionError(
                f"{where}: called with {key}={value!r}, which the tf_keras layer does not take"
            )
    return out


def _input_config(layer_spec: dict) -> dict:
    config = layer_spec["config"]
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None:
        raise LegacyConversionError(f"input '{config.get('name')}' has no shape in its config")
    if config.get("sparse") or config.get("ragged"):
        raise LegacyConversionError(
            f"input '{config.get('name')}': sparse and ragged inputs are not supported"
        )
    return dict(
        batch_shape=tuple(shape), dtype=_policy_name(config.get("dtype")) or "float32", name=config["name"]
    )


def _keras3_model(model):
    import keras

    if isinstance(model, str | bytes) or hasattr(model, "__fspath__"):
        model = keras.saving.load_model(model, compile=False)
    if not isinstance(model, keras.Model):
        raise LegacyConversionError(f"expected a Keras 3 model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential) and (not model.built or model.inputs is None):
        raise LegacyConversionError(f"Sequential model '{model.name}' is not built (give it an Input)")
    from kerascnn.graph import GraphError, flatten

    try:  # Sequential and nested models (a keras.applications backbone): one flat graph, same layers
        model = flatten(model)
    except GraphError as e:
        raise LegacyConversionError(str(e)) from None
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "layers" not in config or "input_layers" not in config:
        raise LegacyConversionError(
            f"model '{model.name}' is a subclassed model; only functional and Sequential models can be "
            "rebuilt in tf_keras"
        )
    return model, config


def to_tf_keras(model, *, check: bool = True, atol: float = 1e-5, check_shape=None):
    """Rebuild a Keras 3 functional (or Sequential) model in tf_keras, with the same weights.

    ``model`` is a Keras 3 model or the path of a ``.keras`` / ``.h5`` file. Each layer's config is
    deserialized by tf_keras, the graph wired as in the Keras 3 config, and the weights copied layer by
    layer. With ``check``, both models run on the same random batch and a ``LegacyConversionError`` is
    raised when the outputs differ by more than ``atol``; ``check_shape`` (H, W, C) gives the size
    to check at for inputs with free spatial dimensions.
    """
    import tf_keras

    model, config = _keras3_model(model)
    specs = config["layers"]
    by_name = {spec["name"]: spec for spec in specs}
    tensors: dict[tuple[str, int, int], Any] = {}
    tfk_layers: dict[str, Any] = {}
    pending = list(specs)
    while pending:
        progressed = False
        for spec in list(pending):
            name = spec["name"]
            where = f"layer '{name}' ({spec['class_name']})"
            nodes = spec.get("inbound_nodes") or []
            if spec["class_name"] == "InputLayer":
                tensors[(name, 0, 0)] = tf_keras.Input(**_input_config(spec))
                tfk_layers[name] = producer(tensors[(name, 0, 0)])
                pending.remove(spec)
                progressed = True
                continue
            if not all(r in tensors for node in nodes for r in _refs(node)):
                continue
            layer = tfk_layers.get(name)
            if layer is None:
                if spec["class_name"] in ("Functional", "Sequential", "Model"):
                    raise LegacyConversionError(
                        f"{where}: nested models cannot be rebuilt; "
                        "flatten the model into one functional graph"
                    )
                tfk_cls = _tfk_layer_class(spec["class_name"], where)
                layer_config = _layer_config(spec, tfk_cls, _k3_layer_class(spec["class_name"]))
                try:
                    layer = tfk_cls.from_config(layer_config)
                except Exception as err:
                    raise LegacyConversionError(f"{where}: tf_keras cannot build it: {err}") from err
                tfk_layers[name] = layer
            for index, node in enumerate(nodes):
                if isinstance(node, dict):
                    args, kwargs = node.get("args", []), node.get("kwargs", {})
                else:  # Keras 2 style node list: [[name, node, tensor, kwargs], ...]
                    raise LegacyConversionError(f"{where}: legacy-format inbound nodes are not supported")
                args = _resolve(args, tensors)
                kwargs = _call_kwargs(_resolve(kwargs, tensors), layer, where)
                try:
                    outputs = layer(*args, **kwargs)
                except Exception as err:
                    raise LegacyConversionError(f"{where}: tf_keras cannot call it: {err}") from err
                flat = outputs if isinstance(outputs, list | tuple) else [outputs]
                for t, tensor in enumerate(flat):
                    tensors[(name, index, t)] = tensor
            pending.remove(spec)
            progressed = True
        if not progressed:
            missing = sorted({r[0] for s in pending for n in s.get("inbound_nodes") or [] for r in _refs(n)})
            missing = [m for m in missing if m not in by_name]
            raise LegacyConversionError(
                f"model '{model.name}': cannot order the layers "
                f"({', '.join(s['name'] for s in pending[:5])}...; unknown inputs: {missing or 'none'})"
            )
    inputs = [tensors[r] for r in _io_list(config["input_layers"])]
    outputs = [tensors[r] for r in _io_list(config["output_layers"])]
    tfk_model = tf_keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs if len(outputs) > 1 else outputs[0],
        name=config.get("name") or model.name,
    )
    _copy_weights(model, tfk_model, to_legacy=True)
    if check:
        diffs = layer_differences(model, tfk_model, shape=check_shape)
        worst = max(diffs, key=diffs.get, default=None)
        if worst is not None and not diffs[worst] <= atol:
            first_bad = next(n for n, d in diffs.items() if not d <= atol)
            raise LegacyConversionError(
                f"model '{model.name}': the tf_keras rebuild differs from the Keras 3 model from layer "
                f"'{first_bad}' ({type(model.get_layer(first_bad)).__name__}) on (relative difference "
                f"{diffs[first_bad]:.3g}, more than {atol:g}); that layer behaves differently in tf_keras"
            )
    return tfk_model


def _copy_weights(k3_model, tfk_model, *, to_legacy: bool) -> None:
    tfk_by_name = {layer.name: layer for layer in tfk_model.layers}
    for layer in k3_model.layers:
        source_weights = layer.get_weights() if to_legacy else None
        other = tfk_by_name.get(layer.name)
        if other is None:
            if layer.weights:
                raise LegacyConversionError(f"layer '{layer.name}' has weights but no tf_keras twin")
            continue
        if to_legacy:
            src, dst, target = source_weights, other.get_weights(), other
        else:
            src, dst, target = other.get_weights(), layer.get_weights(), layer
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst, strict=True)):
            raise LegacyConversionError(
                f"layer '{layer.name}' ({type(layer).__name__}): weights do not match between Keras 3 "
                f"{[tuple(w.shape) for w in (src if to_legacy else dst)]} and tf_keras "
                f"{[tuple(w.shape) for w in (dst if to_legacy else src)]}"
            )
        target.set_weights(src)


def from_tf_keras_weights(keras3_model, tfk_model) -> None:
    """Copy the weights of a tf_keras model (e.g. pruned and stripped) into the Keras 3 model, by layer
    name; every Keras 3 layer with weights needs a twin of the same name and weight shapes."""
    _copy_weights(keras3_model, tfk_model, to_legacy=False)


def _example_inputs(model, shape=None, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        dims = list(tensor.shape[1:])
        if any(d is None for d in dims):
            if shape is None:
                shape = tuple(64 if d is None else d for d in dims)
            dims = list(shape)
        arrays.append(rng.standard_normal((batch, *dims)).astype(np.float32))
    return arrays


def _outputs_by_layer(model) -> dict[str, Any]:
    """{layer name: its output tensor in ``model``} for layers called exactly once in the model's graph
    (Keras 3 and tf_keras graphs alike: :func:`~kerascnn.keras_internals.nodes_by_depth`; ``layer.output``
    would be ambiguous for a layer that was also called elsewhere, as after loading a Sequential model)."""
    calls: dict[str, list] = {}
    for nodes in nodes_by_depth(model).values():
        for node in nodes:
            layer = getattr(node, "operation", None) or getattr(node, "layer", None)
            if layer is None or type(layer).__name__ == "InputLayer":
                continue
            outputs = node.outputs
            calls.setdefault(layer.name, []).append(
                _first(outputs) if isinstance(outputs, list | tuple) else outputs
            )
    return {name: outs[0] for name, outs in calls.items() if len(outs) == 1}


def layer_differences(k3_model, tfk_model, *, shape=None, batch: int = 2) -> dict[str, float]:
    """For every layer called once in both models: the largest absolute difference between its outputs
    in Keras 3 and tf_keras on one random batch (inference mode), divided by ``max(1, max |output|)``
    so deep activations of large magnitude compare on the same footing as probabilities."""
    import keras
    import tf_keras

    from kerascnn.graph import flatten

    k3_model = flatten(k3_model)
    k3_outputs, tfk_outputs = _outputs_by_layer(k3_model), _outputs_by_layer(tfk_model)
    names = [
        layer.name for layer in k3_model.layers if layer.name in k3_outputs and layer.name in tfk_outputs
    ]
    inputs = _example_inputs(k3_model, shape, batch)
    feed = inputs if len(inputs) > 1 else inputs[0]
    k3_inputs = k3_model.inputs if len(k3_model.inputs) > 1 else k3_model.inputs[0]
    tfk_inputs = tfk_model.inputs if len(tfk_model.inputs) > 1 else tfk_model.inputs[0]
    a = keras.Model(k3_inputs, [k3_outputs[n] for n in names])(feed, training=False)
    b = tf_keras.Model(tfk_inputs, [tfk_outputs[n] for n in names])(feed, training=False)
    a = a if isinstance(a, list | tuple) else [a]
    b = b if isinstance(b, list | tuple) else [b]
    out = {}
    for name, x, y in zip(names, a, b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        out[name] = float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(x))))) if x.size else 0.0
    return out


def _first(out):
    return out[0] if isinstance(out, list | tuple) else out


def max_output_difference(k3_model, tfk_model, *, shape=None, batch: int = 2) -> float:
    """Largest absolute difference between the two models' outputs on one random batch (inference)."""
    inputs = _example_inputs(k3_model, shape, batch)
    feed = inputs if len(inputs) > 1 else inputs[0]
    a = k3_model(feed, training=False)
    b = tfk_model(feed, training=False)
    a = a if isinstance(a, list | tuple) else [a]
    b = b if isinstance(b, list | tuple) else [b]
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True))
