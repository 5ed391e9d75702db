"""kinfer's ONNX Runtime server: the Open Inference Protocol v2 the way Triton speaks it."""

__version__ = "0.1.0"
SERVER_NAME = "kinfer-ort-server"
