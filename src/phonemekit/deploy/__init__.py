"""Deployment: ONNX export and plumbing, the torch-free runtime, batch testing, the benchmark and the one-file ensemble."""
