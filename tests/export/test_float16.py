"""validate's ``gpu float16`` row: a float .tflite computed as the GPU delegate computes by default
(float16 weights and activations), which FAILs a model whose activations leave float16's range and
names the layer, and passes an ordinary trained model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from kerascnn.export.float16 import FLOAT16_MAX, Float16Simulation
from kerascnn.export.pipeline import ExportOptions, export_model, resolve_source
from kerascnn.export.validate import validate

from kerascnn.cli import main

from .test_sensitivity import QUIET, relu_lenet  # noqa: F401 - the module fixture


def _overflowing(tmp_path):
    """A small CNN, then the same function with c1's kernel x1e5 (after its ReLU) and c2's x1e-5: equal
    in float32, but c1's activations pass 65,504."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="overflow")
    model.save(tmp_path / "plain.keras")
    kernel, bias = model.get_layer("c1").get_weights()
    model.get_layer("c1").set_weights([kernel * 1e5, bias * 1e5])
    kernel, bias = model.get_layer("c2").get_weights()
    model.get_layer("c2").set_weights([kernel * 1e-5, bias])
    model.save(tmp_path / "scaled.keras")
    return tmp_path / "plain.keras", tmp_path / "scaled.keras"


def test_float16_overflow_fails_its_row_and_names_the_layer(tmp_path):
    plain, scaled = _overflowing(tmp_path)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, 1)).astype("float32")
    a, b = (keras.saving.load_model(p) for p in (plain, scaled))
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), atol=1e-5)  # one function
    sim = Float16Simulation(b)
    assert not np.isfinite(sim.predict(x)).all()
    diagnosis = sim.diagnose(x)
    assert diagnosis.overflow and diagnosis.layer == "c1" and diagnosis.peak > FLOAT16_MAX
    assert Float16Simulation(a).diagnose(x).overflow is False

    out = tmp_path / "export"
    opts = ExportOptions(tflite=("none", "float16"))
    results = export_model(resolve_source(scaled, mean=(127.5,), std=(127.5,)), out, opts, **QUIET)
    assert all(r.status == "ok" for r in results), results
    runner = CliRunner()
    result = runner.invoke(
        main, ["validate", str(out), "--data", "fashion_mnist", "--limit", "100", "--no-mediapipe"]
    )
    assert result.exit_code != 0, result.output
    rows = {
        line.split()[0] + " " + line.split()[1]: line for line in result.output.splitlines() if "  " in line
    }
    assert " ok " in rows["tflite float32"] and "FAIL" in rows["gpu float16"], result.output
    assert "inf/NaN outputs in float16; float16 overflow: layer c1's activations reach" in result.output
    assert "setPrecisionLossAllowed(false)" in result.output and "--quantize int8" in result.output
    # Without the Keras model beside it the row cannot be simulated: n/a, not a failure.
    alone, _ = validate(
        [out / "overflow_float32.tflite"], "fashion_mnist", limit=50, mediapipe=False, **QUIET
    )
    row = next(r for r in alone if r.format.startswith("gpu float16"))
    assert row.status == "n/a" and "validate the .keras file with it" in row.error


def test_an_ordinary_trained_model_passes_its_float16_rows(relu_lenet, tmp_path):  # noqa: F811
    plain, _ = relu_lenet
    opts = ExportOptions(tflite=("none", "float16", "dynamic"))
    results = export_model(resolve_source(plain), tmp_path, opts, **QUIET)
    assert all(r.status == "ok" for r in results), results
    rows, summary = validate([tmp_path], "fashion_mnist", limit=500, mediapipe=False, **QUIET)
    sims = [r for r in rows if r.format.startswith("gpu float16")]
    assert sorted(r.file for r in sims) == ["lenet5_float16.tflite", "lenet5_float32.tflite"]  # float only
    for row in sims:
        assert row.status == "ok" and row.agreement >= 99.6 and row.max_abs_diff < 1e-2, row
        assert row.note.startswith("float16: largest error at layer ") and row.ms_per_image is None
    assert summary["passed"]
    # Each .tflite row carries the accelerator readings: the phone file's fixed batch makes LeNet's
    # Flatten one RESHAPE of a constant shape, which the GPU delegate takes (with a free batch it was a
    # runtime reshape, SHAPE, STRIDED_SLICE and RESHAPE, which it rejects: tests/export/test_delegates.py).
    float32 = next(r for r in rows if r.format == "tflite float32")
    found = float32.accelerators
    assert found["gpu"]["fully_compatible"] is True and found["integer"] is None  # no integer reading
    assert found["gpu"]["unsupported"] == [] and float32.note.startswith("GPU delegate: takes all ")


@pytest.mark.parametrize("layer", ["c1", "head"])
def test_float16_rounding_is_the_only_change(layer, tmp_path):
    """Each layer's output is float16-representable in the simulation (rounded), and a model in the
    float16 range keeps its outputs to float16's precision."""
    plain, _ = _overflowing(tmp_path)
    model = keras.saving.load_model(plain)
    sim = Float16Simulation(model)
    x = np.random.default_rng(1).uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
    probe = dict(zip(sim.layers, sim._probe([x]), strict=True))
    values = np.asarray(probe[layer])
    np.testing.assert_array_equal(values, values.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(sim.predict(x), model.predict(x, verbose=0), atol=2e-3)
