"""THE table of export formats, as Ultralytics' ``export_formats()``: every file ``kerascnn export`` can
write, with the option that asks for it, the options it reads, the function that writes it and the
runtime that runs it. Export dispatch (:func:`kerascnn.export.pipeline.export_model`), its option
checks, ``kerascnn validate``/``benchmark``'s row order, the CLI's ``--quantize`` choices and help,
and the README's list of files (a test compares them) are all derived from it.

Light on purpose (no TensorFlow): the CLI reads it to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    key: str  # the row's name in the summary, model.json and the Android preference
    kind: str  # keras | tflite | onnx: the runtime that runs the file (runtime.load_predictor)
    suffix: str  # file name = <model name><suffix>
    quantization: str  # what the file's metadata says
    option: str  # the export option that asks for it (--quantize VALUE, --onnx, --qat, --prune)
    writer: str  # the pipeline function that writes it (pipeline.WRITERS[writer])
    reads: tuple[str, ...] = ()  # the ExportOptions fields it reads beyond the common ones
    source: str | None = None  # converted from this format's file (ONNX from TFLite)
    help: str = ""

    @property
    def quantize(self) -> str | None:
        """Its ``--quantize`` value, for TFLite variants asked for that way."""
        return self.option.removeprefix("--quantize ") if self.option.startswith("--quantize ") else None

    @property
    def calibrated(self) -> bool:
        return "calibration_steps" in self.reads


_CALIBRATION = ("calibration_data", "calibration_steps", "per_tensor")
_FINE_TUNE = ("train_fraction", "batch_size", "seed")
FORMATS = (
    Format("keras", "keras", ".keras", "none", "(always)", "keras", help="the reference model"),
    Format("pruned", "keras", "_pruned.keras", "none", "--prune", "pruned",
           ("prune", "prune_epochs", *_FINE_TUNE), help="pruned; the other formats are made from it"),
    Format("float32", "tflite", "_float32.tflite", "none", "--quantize none", "tflite", help="float32"),
    Format("dynamic", "tflite", "_dynamic.tflite", "dynamic", "--quantize dynamic", "tflite",
           help="int8 weights, float activations"),
    Format("float16", "tflite", "_float16.tflite", "float16", "--quantize float16", "tflite",
           help="float16 weights"),
    Format("int8", "tflite", "_int8.tflite", "int8", "--quantize int8", "tflite",
           (*_CALIBRATION, "io_type", "float_layers"), help="full integer, with a per-layer error report"),
    Format("int16x8", "tflite", "_int16x8.tflite", "int16x8", "--quantize int16x8", "tflite", _CALIBRATION,
           help="int8 weights, int16 activations"),
    Format("mixed", "tflite", "_mixed.tflite", "mixed", "--quantize mixed", "mixed",
           (*_CALIBRATION, "io_type", "holdout", "min_agreement", "max_drop"),
           help="int8 with the fewest layers in float that pass --min-agreement/--max-drop on held-back "
           "calibration images"),
    Format("qat_int8", "tflite", "_qat_int8.tflite", "qat_int8", "--qat", "qat",
           ("qat_epochs", "qat_lr", "io_type", *_FINE_TUNE), help="quantization-aware training, then int8"),
    Format("onnx", "onnx", ".onnx", "none", "--onnx", "onnx", ("opset",), help="float ONNX (tf2onnx)"),
    Format("onnx_int8", "onnx", "_int8.onnx", "int8", "--onnx", "onnx_from_tflite", ("opset",), "int8",
           help="QDQ ONNX converted from the int8 TFLite"),
    Format("onnx_mixed", "onnx", "_mixed.onnx", "mixed", "--onnx", "onnx_from_tflite", ("opset",), "mixed",
           help="converted from the mixed TFLite"),
    Format("onnx_qat_int8", "onnx", "_qat_int8.onnx", "qat_int8", "--onnx", "onnx_from_tflite", ("opset",),
           "qat_int8", help="converted from the QAT int8 TFLite"),
)  # fmt: skip
FORMAT_BY_KEY = {f.key: f for f in FORMATS}
QUANTIZE = {f.quantize: f for f in FORMATS if f.quantize}  # --quantize value -> its TFLite format

IO_TYPES = ("float32", "int8", "uint8")  # --io-type: the input/output tensors of integer models

# The runtimes, in the order validate and benchmark list their rows: the reference first.
KINDS = ("keras", "tflite", "onnx")
KIND_BY_SUFFIX = {f.suffix[f.suffix.rindex(".") :]: f.kind for f in FORMATS} | {
    ".h5": "keras"
}  # a user's .h5


def quantize_help() -> str:
    """The ``--quantize`` choices with what each writes, for ``--help``."""
    return ", ".join(f"{value} ({fmt.help})" for value, fmt in QUANTIZE.items())
