"""kerascnn.keras_internals: each wrapper of a Keras private API pinned on a small model (a Keras
upgrade that changes one fails here), and two scans of kerascnn/ and export/: no other module reaches
for a Keras private API, and no module imports another module's private name
(ARCHITECTURE.md: private modules, public names)."""

from __future__ import annotations

import ast
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from kerascnn import keras_internals as ki

ROOT = Path(__file__).resolve().parents[1]
INTERNALS = ROOT / "kerascnn" / "keras_internals.py"
L = keras.layers


def _chain():
    """x (4) -> Dense a (3) -> Dense b (2): 4*3 + 3 + 3*2 + 2 = 23 weights."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, L.Dense(2, name="b")(L.Dense(3, name="a")(inp)), name="chain")


# ------------------------------------------------------------------------------------ Keras 3


def test_run_through_graph_applies_the_same_layers_to_new_tensors():
    model = _chain()
    image = keras.Input((5,), name="image")
    front = L.Dense(4, name="front")
    called = []

    def operation_fn(layer):
        called.append(layer.name)
        return layer

    out = ki.run_through_graph(model, [front(image)], operation_fn)
    assert called == ["a", "b"]
    assert isinstance(out, keras.KerasTensor) and tuple(out.shape) == (None, 2)
    flat = keras.Model(image, out)
    assert [layer.name for layer in flat.layers] == ["image", "front", "a", "b"]  # one flat graph
    assert flat.count_params() == 5 * 4 + 4 + 23
    assert flat.get_layer("a") is model.get_layer("a")  # the model's own layers, weights shared
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(front(x)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flat(x)), expected, rtol=1e-6)


def test_producer_is_the_layer_that_made_a_symbolic_tensor():
    model = _chain()
    assert ki.producer(model.outputs[0]) is model.get_layer("b")
    made_input = ki.producer(model.inputs[0])
    assert type(made_input).__name__ == "InputLayer" and made_input.name == "x"
    assert ki.producer(np.zeros(3)) is None
    assert ki.producer(keras.ops.ones((2,))) is None  # an eager tensor belongs to no graph


def test_inbound_and_outbound_nodes_are_the_calls_of_a_layer():
    model = _chain()
    a = model.get_layer("a")
    (node,) = ki.inbound_nodes(a)
    assert ki.producer(node.input_tensors[0]).name == "x"
    assert node.output_tensors[0] is model.get_layer("b").input
    assert [n.operation.name for n in ki.outbound_nodes(a)] == ["b"]
    assert ki.outbound_nodes(model.get_layer("b")) == []
    a(keras.Input((4,)))  # a second call, outside the model
    assert len(ki.inbound_nodes(a)) == 2


def test_nodes_by_depth_orders_the_calls_from_the_outputs():
    model = _chain()
    by_depth = ki.nodes_by_depth(model)
    assert {d: [n.operation.name for n in nodes] for d, nodes in by_depth.items()} == {
        0: ["b"],
        1: ["a"],
        2: ["x"],
    }

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert ki.nodes_by_depth(Subclassed()) is None


def test_was_called_turns_true_on_the_first_call_only():
    model = _chain()
    assert model.built and not ki.was_called(model)
    model(np.zeros((1, 4), np.float32))
    assert ki.was_called(model)


def test_input_signature_is_one_spec_per_input_with_a_free_batch():
    inp = keras.Input((8, 8, 3), batch_size=4, name="image")
    model = keras.Model(inp, L.Conv2D(2, 3)(inp))
    (spec,) = ki.input_signature(model)
    assert (tuple(spec.shape), spec.dtype, spec.name) == ((None, 8, 8, 3), "float32", "image")


def test_patch_tf2onnx_rewrites_what_numpy_2_removed():
    tf2onnx = pytest.importorskip("tf2onnx")
    ki.patch_tf2onnx()
    assert getattr(np, "object") is object  # noqa: B009 - NumPy 2 has no np.object until patched
    assert tf2onnx.tfonnx.rewrite_constant_fold.__name__ == "patched_rewrite_constant_fold"
    assert tf2onnx.graph.Node.get_value_attr.__name__ == "patched_get_value_attr"


def test_hdf5_attribute_joins_the_chunks_of_a_long_list(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:  # as Keras writes a list past HDF5's 64 KB attribute limit
        f.attrs["layer_names0"] = np.array([b"conv1", b"bn1"])
        f.attrs["layer_names1"] = np.array([b"fc"])
        f.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel:0", b"conv1/bias:0"])
    with h5py.File(path, "r") as f:
        assert ki.hdf5_attribute(f, "layer_names") == ["conv1", "bn1", "fc"]
        assert ki.hdf5_attribute(f["conv1"], "weight_names") == ["conv1/kernel:0", "conv1/bias:0"]
        assert ki.hdf5_attribute(f["conv1"], "layer_names") == []


def test_symbolic_build_builds_what_fit_would_and_fit_still_trains():
    model = _chain()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.ones((4, 4), np.float32), np.array([0, 1, 0, 1])
    assert not model.optimizer.built
    ki.symbolic_build(model, (x, y))
    assert model.optimizer.built
    # Adam: the iteration count and the learning rate, then a first and a second moment per weight
    assert len(model.optimizer.variables) == 2 + 2 * len(model.trainable_variables) == 10
    assert [m.name for m in model.metrics] == ["loss", "compile_metrics"]
    before = model.get_layer("b").get_weights()[0].copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 1
    assert not np.array_equal(model.get_layer("b").get_weights()[0], before)


def test_reduce_logs_locally_switches_off_the_cross_worker_reduction(monkeypatch):
    from keras.src.backend.tensorflow import trainer

    real = trainer._collective_all_reduce_multi_worker
    monkeypatch.setattr(trainer, "_collective_all_reduce_multi_worker", real)  # put back after the test
    ki.reduce_logs_locally()
    assert trainer._collective_all_reduce_multi_worker is not real
    assert trainer._collective_all_reduce_multi_worker(object()) is False


def test_a_renamed_private_attribute_is_an_error_not_a_silent_no_op():
    with pytest.raises(RuntimeError, match=r"_symbolic_build.*keras_internals needs updating"):
        ki.symbolic_build(object(), None)


# ------------------------------------------------------------------------------------ tf_keras


def test_the_graph_readers_take_tf_keras_models_too():
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((4,), name="x")
    a, b = tf_keras.layers.Dense(3, name="a"), tf_keras.layers.Dense(2, name="b")
    model = tf_keras.Model(inp, b(a(inp)))
    assert ki.producer(model.outputs[0]) is b and ki.producer(inp).name == "x"
    by_depth = ki.nodes_by_depth(model)
    assert {d: [n.outbound_layer.name for n in nodes] for d, nodes in by_depth.items()} == {
        0: ["b"],
        1: ["a"],
        2: ["x"],
    }
    assert [n.outbound_layer.name for n in ki.outbound_nodes(a)] == ["b"]
    twin = tf_keras.models.clone_model(model, clone_function=lambda layer: layer)  # the same layers
    first, second = ki.inbound_nodes(a)
    assert [ki.node_in_model(model, n) for n in (first, second)] == [True, False]
    assert [ki.node_in_model(twin, n) for n in (first, second)] == [False, True]


# ------------------------------------------------------------------------------------ the scans

# The Keras 3 / tf_keras private attributes kerascnn has used: only keras_internals may touch them.
KERAS_PRIVATE = {
    "_keras_history",
    "_inbound_nodes",
    "_outbound_nodes",
    "_network_nodes",
    "_nodes_by_depth",
    "_functional",
    "_run_through_graph",
    "_symbolic_build",
    "_maybe_symbolic_build",
    "_collective_all_reduce_multi_worker",
    "_called",
    "_inputs_struct",
    "_outputs_struct",
    "_build_shapes_dict",
}
PRIVATE_PACKAGES = ("keras.src", "tf_keras.src")


def _sources() -> list[Path]:
    return sorted(p for folder in ("kerascnn", "export") for p in (ROOT / folder).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _keras_private_uses(path: Path) -> list[str]:
    """Where ``path`` imports keras.src / tf_keras.src or names a Keras private attribute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        modules += [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {m}"
            for m in modules
            if any(m == p or m.startswith(p + ".") for p in PRIVATE_PACKAGES)
        ]
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "value", None)
        if isinstance(name, str) and name in KERAS_PRIVATE:  # x._keras_history, getattr(x, "_called")
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_only_keras_internals_uses_keras_private_apis():
    assert len(_keras_private_uses(INTERNALS)) >= 12  # the scan sees them where they are allowed
    found = [use for path in _sources() if path != INTERNALS for use in _keras_private_uses(path)]
    assert not found, "use kerascnn.keras_internals (or add a function there, saying why):\n" + "\n".join(
        found
    )


def test_no_module_uses_another_modules_private_name():
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to kerascnn modules (or their contents) by an import
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if _private(alias.name):
                        found.append(f"{rel}:{node.lineno}: from {node.module or '.'} import {alias.name}")
                    if node.level or (node.module or "").startswith("kerascnn"):
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name for a in node.names if a.name.startswith("kerascnn")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in modules and _private(node.attr):
                    found.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "give the name a public one (ARCHITECTURE.md):\n" + "\n".join(found)
