"""Export of trained models to ONNX with a parity check against onnxruntime."""
