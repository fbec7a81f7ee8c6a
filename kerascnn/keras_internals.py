"""The Keras private APIs kerascnn relies on, each behind one small function that says what it does
and why no public API serves, so that a Keras upgrade that changes one breaks here and nowhere else
(tests/test_keras_internals.py pins each one, and checks that no other module reaches for them).

Keras 3 keeps a model's graph of calls (nodes) to itself: its public API gives layers and their
configs, not who calls whom. kerascnn walks that graph to flatten nested models, to read the
preprocessing at the input, to count MACs and receptive fields per call, to rebuild a model in tf_keras
for QAT and to compare the two. The functions that read the graph take tf_keras (Keras 2) objects too:
tf_keras keeps the same private attribute names. Nothing here imports TensorFlow or Keras at import
time.
"""

from __future__ import annotations


def run_through_graph(model, inputs, operation_fn):
    """The outputs of Functional ``model``'s graph run on ``inputs`` (KerasTensors, one per model
    input), calling ``operation_fn(layer)(*args, **kwargs)`` at each node in topological order: with
    ``lambda layer: layer``, the model's own layers applied to new tensors, as one flat graph.

    Why private (``Function._run_through_graph``): calling the model on the tensors nests it as one
    layer, which the flattened reports and the tf_keras rebuild for QAT cannot see into;
    ``keras.models.clone_model(model, input_tensors=...)`` walks the same graph but returns a new model,
    and a Functional whose inputs are not ``keras.Input`` tensors re-roots the graph on new Input layers
    (``clone_graph_nodes``), so the outputs wired to the given tensors never come back."""
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def producer(tensor):
    """The layer (Keras 3: operation) whose call produced ``tensor``; None for anything that is not a
    symbolic tensor of a graph. Keras 3 KerasTensors and tf_keras symbolic tensors alike.

    Why private (``tensor._keras_history``): a KerasTensor exposes no public producer, and the reverse
    lookup, ``layer.output``, raises for a layer called more than once."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history else None


def inbound_nodes(layer) -> list:
    """The nodes of ``layer``: one per call of it, in every graph it was called in (``node.input_tensors``,
    ``node.output_tensors``; tf_keras: ``node.inbound_layers``). Keras 3 and tf_keras layers.

    Why private (``layer._inbound_nodes``): Keras has no public API for a layer's calls;
    ``layer.input``/``layer.output`` name one call and raise for a layer called more than once."""
    return list(layer._inbound_nodes)


def outbound_nodes(layer) -> list:
    """The nodes of the calls that take ``layer``'s output, in every graph (tf_keras:
    ``node.outbound_layer`` is the layer called). Keras 3 and tf_keras layers.

    Why private (``layer._outbound_nodes``): as :func:`inbound_nodes`, the consumers of a layer have no
    public accessor."""
    return list(layer._outbound_nodes)


def nodes_by_depth(model) -> dict | None:
    """{depth: [node]} of a Functional ``model``'s graph (depth 0 at the outputs, the inputs deepest;
    a node's parents are always deeper), or None for a model without a graph of its own (a subclassed
    model, a Sequential). Keras 3 and tf_keras models.

    Why private (``model._nodes_by_depth``): ``model.layers`` lists each layer once, not each call
    with its input tensors, and ``get_config()`` gives the graph as serialized names, not tensors."""
    return getattr(model, "_nodes_by_depth", None)


def node_in_model(model, node) -> bool:
    """Whether ``node`` (a call of ``node.outbound_layer``) is part of tf_keras ``model``'s graph. A
    layer can have calls in several models, as after ``clone_model`` or ``strip_pruning`` with the same
    layer objects. tf_keras only (Keras 3 has no ``_network_nodes``).

    Why private (``model._network_nodes``, keyed ``{layer name}_ib-{call index}`` as tf_keras'
    ``_make_node_key``): tf_keras records which calls belong to a model only there."""
    layer = node.outbound_layer
    return f"{layer.name}_ib-{layer._inbound_nodes.index(node)}" in model._network_nodes


def was_called(model) -> bool:
    """Whether ``model`` has been called at least once (a model just loaded, or built from tensors,
    has not).

    Why private (``layer._called``): Keras' ONNX export refuses a model never called (it checks
    ``model._called``), and no public attribute tells: ``model.built`` is already True."""
    return bool(getattr(model, "_called", True))


def input_signature(model) -> list:
    """The input specs ``model.export()`` uses for ``model`` (an ``InputSpec`` per input, with its name,
    a free batch size, nested as the model takes them), for a ``keras.export.ExportArchive`` endpoint.

    Why private (``keras.src.export.export_utils.get_input_signature``): ``add_endpoint`` needs a
    signature and Keras derives it (a Functional's input structure, a Sequential's inputs, a subclassed
    model's build shapes) only there; kerascnn writes its own archive so that its ``serve`` endpoint
    calls the model with ``training=False``."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)


def patch_tf2onnx() -> None:
    """Make tf2onnx work with NumPy 2, as Keras does before its own ONNX export (``np.object``, and
    tf2onnx's constant folding and ``Node.get_value_attr`` rewritten without removed NumPy names).

    Why private (``keras.src.export.tf2onnx_lib.patch_tf2onnx``): kerascnn calls tf2onnx's TFLite front
    end itself (``model.export(format="onnx")`` takes a Keras model, not a .tflite), and Keras applies
    its patch only inside its own export."""
    from keras.src.export.tf2onnx_lib import patch_tf2onnx as keras_patch

    keras_patch()


def hdf5_attribute(group, name: str) -> list[str]:
    """The list of strings a Keras HDF5 file stores as attribute ``name`` of ``group`` (``layer_names``,
    ``weight_names``), joined from the chunks (``name0``, ``name1``, ...) Keras splits a long list into
    past HDF5's 64 KB attribute limit, decoded from bytes.

    Why private (``keras.src.legacy.saving.legacy_h5_format.load_attributes_from_hdf5_group``):
    ``model.load_weights`` needs a model of the file's very layers; kerascnn reads the published
    weights files by layer name to copy them strictly into its own builders, and Keras reads the names
    only there."""
    from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group

    return load_attributes_from_hdf5_group(group, name)


def _require(owner, *names: str) -> None:
    """Raise when Keras no longer has an attribute we replace (setting it would silently do nothing)."""
    missing = [n for n in names if not hasattr(owner, n)]
    if missing:
        import keras

        raise RuntimeError(
            f"Keras {keras.version()} has no {', '.join(missing)} on {getattr(owner, '__name__', owner)!r}: "
            "kerascnn.keras_internals needs updating for this Keras"
        )


def symbolic_build(model, data_batch) -> None:
    """Build compiled ``model`` as ``fit`` does before its first step, from ``data_batch`` (an ``(x,
    y)`` batch): its layers, compiled loss and metrics and optimizer variables; then make ``fit``'s own
    build a no-op, so that ``fit`` builds nothing more.

    Why private (``Trainer._symbolic_build``, ``_maybe_symbolic_build``): no public call builds the
    compiled state (``model.build`` builds the layers only), and under MultiWorkerMirroredStrategy
    ``fit``'s own build reduces the first distributed batch across workers eagerly, which fails
    (keras-team/keras#20585)."""
    _require(model, "_symbolic_build", "_maybe_symbolic_build")
    model._symbolic_build(data_batch=data_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def reduce_logs_locally() -> None:
    """Make ``fit`` reduce its logs (loss, metrics) over this worker's replicas only, for every model in
    the process. Gradients are still all-reduced across workers by the strategy.

    Why private (the TensorFlow trainer's ``_collective_all_reduce_multi_worker``): under
    MultiWorkerMirroredStrategy Keras reduces the scalar logs with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails on scalars (keras-team/keras#20585), and has no option to turn it off."""
    from keras.src.backend.tensorflow import trainer

    _require(trainer, "_collective_all_reduce_multi_worker")
    trainer._collective_all_reduce_multi_worker = lambda strategy: False
