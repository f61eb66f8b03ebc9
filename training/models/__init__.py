"""Neural and tree models trained offline; exported to ONNX for the scorer."""
