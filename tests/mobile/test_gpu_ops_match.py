"""The Android demo's GPU check (mobile_demo/android/core/.../GpuCompatibility.kt) and export/delegates.py
take the same op types.

The Kotlin core decides, before the app adds the GPU delegate, whether the delegate would take every op of
the model; it knows the op types of ``tensorflow/lite/tools/versioning/gpu_compatibility.cc`` as
``kerascnn.export.delegates`` encodes them (``_GPU``: builtin op name -> rule; ``_GPU_UNCHECKED``; and
``_GPU_CUSTOM``: custom code -> rule), plus one of the per-op rules (a RESHAPE with a runtime shape).
This test parses the Kotlin tables and compares them with Python's, checks each op's code against
TFLite's schema, and checks that Python reads the files the Kotlin test uses as that test expects.
"""

from __future__ import annotations

import re
from pathlib import Path

from kerascnn.export import delegates

ROOT = Path(__file__).resolve().parents[2]
KOTLIN = ROOT / "mobile_demo/android/core/src/main/kotlin/dev/kerascnn/core/GpuCompatibility.kt"
FLATTEN = ROOT / "mobile_demo/fixtures/tflite/flatten_dynamic_batch.tflite"  # test_golden_fixtures.py
MOBILENET = ROOT / "mobile_demo/models/mobilenet_v2_float32.tflite"


def _block(name: str) -> str:
    """The body of ``val NAME: ... = mapOf(...)`` / ``setOf(...)`` in GpuCompatibility.kt."""
    match = re.search(rf"val {name}: [^=]+= (?:mapOf|setOf)\((.*?)\n    \)", KOTLIN.read_text(), re.S)
    assert match, f"no `val {name} = mapOf(...)` in {KOTLIN.name}"
    return match.group(1)


def _codes(name: str) -> dict[str, int]:
    return {op: int(code) for op, code in re.findall(r'"([A-Z0-9_]+)" to (\d+)', _block(name))}


def _diff(kotlin: set[str], python: set[str]) -> str:
    only_kotlin, only_python = sorted(kotlin - python), sorted(python - kotlin)
    return f"only in GpuCompatibility.kt: {only_kotlin}; only in delegates.py: {only_python}"


def test_the_gpu_op_types_are_delegates_gpu_table():
    kotlin, python = set(_codes("GPU_OPS")), set(delegates._GPU)
    assert len(python) > 50 and kotlin == python, _diff(kotlin, python)
    unchecked = set(_codes("GPU_UNCHECKED_OPS"))
    assert unchecked == delegates._GPU_UNCHECKED, _diff(unchecked, delegates._GPU_UNCHECKED)
    custom = set(re.findall(r'"(\w+)"', _block("GPU_CUSTOM_OPS")))
    assert custom == set(delegates._GPU_CUSTOM), _diff(custom, set(delegates._GPU_CUSTOM))


def test_every_op_code_is_the_schemas():
    from tensorflow.lite.python.schema_py_generated import BuiltinOperator

    pairs = re.findall(r'"([A-Z0-9_]+)" to (\d+)', KOTLIN.read_text())
    assert len(pairs) > 100
    wrong = [(op, int(code), getattr(BuiltinOperator, op, None)) for op, code in pairs]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert not wrong, f"(op, code in GpuCompatibility.kt, BuiltinOperator's): {wrong}"
    assert len({code for _, code in pairs}) == len(pairs), "a code listed twice"


def test_python_reads_the_kotlin_tests_files_as_they_expect():
    """GpuCompatibilityTest: MobileNetV2 taken whole; the Flatten fixture not, SHAPE and the RESHAPE with a
    runtime shape named. Python rejects those too, and STRIDED_SLICE by a rule kept in Python only."""
    assert delegates.gpu_compatibility(MOBILENET).fully_compatible
    report = delegates.gpu_compatibility(FLATTEN)
    assert report.ops == 7 and not report.fully_compatible
    found = [(f.index, f.op, f.tensor) for f in report.unsupported]
    assert found == [
        (1, "SHAPE", "flatnet_1/flatten_1/Shape"),
        (2, "STRIDED_SLICE", "flatnet_1/flatten_1/strided_slice"),
        (4, "RESHAPE", "flatnet_1/flatten_1/Reshape"),
    ]
    assert "2 runtime input(s)" in report.unsupported[2].reason  # its shape input is not a constant
    assert "PACK" in report.op_types  # taken by both
