"""kerascnn.export: TFLite and ONNX conversion, quantization (PTQ, mixed precision, QAT, pruning), the
metadata phones read, and validation of every exported file against the Keras model.

This folder sits at the top of the repository and is installed as ``kerascnn.export`` (pyproject's
``package-dir``). The core (models, data, train, runs) never imports it; the CLI sits on top of both.

Its modules, one room each:

* :mod:`.formats`: THE table of formats; :mod:`.options`: export's options and defaults
  (``ExportOptions``, and ``FineTuneJob``, a QAT/pruning job); :mod:`.pipeline`: ``kerascnn export``
  (one writer per format, the sidecars, the summary);
* :mod:`.tflite`: conversion (PTQ presets), running a ``.tflite``, its ops and sparsity; :mod:`.onnx`;
* :mod:`.sensitivity`: the per-layer int8 report and ``--quantize mixed``;
* :mod:`.quantize`: QAT and pruning (``qat_export``, ``prune_export``; ``python -m
  kerascnn.export.quantize`` is the worker), with :mod:`.jobs` (the caller's side), :mod:`.worker` (the
  worker's commands), :mod:`.qat`, :mod:`.pruning`, :mod:`.finetune` (what the worker shares) and
  :mod:`.legacy` (the tf_keras rebuild); only the worker imports tfmot;
* :mod:`.metadata` (kerascnn's JSON, the standard TFLite Metadata, ONNX metadata_props) and
  :mod:`.tflite_metadata` (the TFLite Metadata schema, encoded and decoded);
* :mod:`.runtime`: one predictor per format and MediaPipe Tasks; :mod:`.validate`: ``kerascnn
  validate``; :mod:`.delegates` (GPU delegate, NNAPI, XNNPACK readings) and :mod:`.float16` (the GPU
  delegate's float16 arithmetic, simulated).
"""
