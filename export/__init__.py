"""kerascnn.export: TFLite and ONNX conversion, quantization (PTQ, mixed precision, QAT, pruning), the
metadata phones read, and validation of every exported file against the Keras model.

This folder sits at the top of the repository and is installed as ``kerascnn.export`` (pyproject's
``package-dir``). The core (models, data, train, runs) never imports it; the CLI sits on top of both.
"""
