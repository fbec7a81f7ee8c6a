"""Every zoo family's phone files, taken whole by the phone's accelerators (issue 42): a fixed batch of 1
(no run-time shape computation) and the pooling rewrites of kerascnn.export.rewrite. The GPU delegate
takes every op of the float32 and int8 files, NNAPI every op of the int8 file and XNNPACK every op of
both, except exactly what the README lists ("Phone accelerators": int8 SOFTMAX on XNNPACK, NiN's
`same`-padded average pool in int8 on XNNPACK, grouped convolutions on NNAPI)."""

from __future__ import annotations

import numpy as np
import pytest
from kerascnn.export import tflite as ktflite
from kerascnn.export.delegates import gpu_compatibility, integer_readiness, xnnpack_coverage
from kerascnn.export.rewrite import phone_pooling

from tests.export.test_quantize import FAMILIES

# What the README lists as not taken, by family: (XNNPACK in the int8 file, NNAPI in the int8 file)
XNNPACK_INT8 = {"SOFTMAX"}  # no int8 softmax kernel in XNNPACK; keeping it int8 keeps NNAPI/NPUs whole
XNNPACK_INT8_BY_FAMILY = {"nin": {"AVERAGE_POOL_2D"}}  # 3x3 'same': the mean of the in-image pixels only
NNAPI_GROUPED = {"alexnet", "resnext"}  # grouped CONV_2D (op version 6): NNAPI maps versions up to 5


def _files(name, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = FAMILIES[name]()
    phone, _ = phone_pooling(model)
    saved = ktflite.write_saved_model(phone, tmp_path / "saved_model")
    images = np.random.default_rng(0).uniform(0, 1, (8, *model.input_shape[1:])).astype("float32")
    files = {}
    for mode in ("none", "int8"):
        files[mode] = tmp_path / f"{name}_{mode}.tflite"
        rep = (lambda: ([x[None]] for x in images)) if mode == "int8" else None
        files[mode].write_bytes(ktflite.convert(saved, mode, rep))
    return model, images, files


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_zoo_family_is_taken_whole_by_the_phone_delegates(name, tmp_path):
    model, images, files = _files(name, tmp_path)
    names = [layer.name for layer in model.layers]
    # the same numbers: the fixed batch and the rewrites change no output of the float32 file
    np.testing.assert_allclose(
        ktflite.run_tflite(files["none"], images), model.predict(images, verbose=0), atol=2e-5
    )
    for mode, path in files.items():
        gpu = gpu_compatibility(path, names)
        assert gpu.fully_compatible, (mode, gpu.describe())
        assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(gpu.op_types)  # no shape computed at run time
        cpu = xnnpack_coverage(path, names)
        left = {f.op for f in cpu.reference}
        allowed = set() if mode == "none" else XNNPACK_INT8 | XNNPACK_INT8_BY_FAMILY.get(name, set())
        assert left <= allowed, (mode, cpu.describe())
    integer = integer_readiness(files["int8"], names)
    assert integer.fully_integer, integer.describe()
    rejected = {(f.op, "op version 6" in f.reason) for f in integer.nnapi_rejected}
    assert rejected == ({("CONV_2D", True)} if name in NNAPI_GROUPED else set()), integer.describe()


def test_a_dynamic_batch_file_is_still_run_on_many_images_and_a_fixed_one_image_by_image(tmp_path):
    """--dynamic-batch: the converter's free batch (and its shape ops) for users who batch on a server."""
    import keras
    from kerascnn.export.tflite import in_chunks

    keras.utils.set_random_seed(0)
    model = FAMILIES["lenet"]()
    images = np.random.default_rng(1).uniform(0, 1, (5, *model.input_shape[1:])).astype("float32")
    free = ktflite.convert(ktflite.write_saved_model(model, tmp_path / "free", batch=None), "none")
    fixed = ktflite.convert(ktflite.write_saved_model(model, tmp_path / "fixed"), "none")
    assert "SHAPE" in ktflite.builtin_op_names(free) and "SHAPE" not in ktflite.builtin_op_names(fixed)
    expected = model.predict(images, verbose=0)
    for content in (free, fixed):
        np.testing.assert_allclose(ktflite.run_tflite(content, images, batch=2), expected, atol=2e-5)
    calls = []
    out = in_chunks(lambda x: calls.append(len(x)) or x[:, :1, 0, 0] * 2, images, 2)
    assert calls == [2, 2, 2] and out.shape == (5, 1)  # the last chunk padded, its padding dropped


def test_any_failure_of_the_accelerator_reading_becomes_the_rows_note(monkeypatch, tmp_path):
    from kerascnn.export import delegates

    def broken(*args, **kwargs):
        raise IndexError("a table the reader did not expect")

    monkeypatch.setattr(delegates, "gpu_compatibility", broken)
    found = delegates.accelerators(tmp_path / "model_int8.tflite", "int8")
    assert found["gpu"] is None and found["lines"] == [
        "accelerators: model_int8.tflite: the accelerator reading failed (IndexError: a table the reader did "
        "not expect)"
    ]
