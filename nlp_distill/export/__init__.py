"""ONNX export of students and a torch-free runtime over the exported folder."""
