"""kerascnn's export pipeline (TFLite, ONNX, quantization, validation): filled in by the export issue."""
