"""kinfer: a Kubernetes operator for elastic inference-as-a-service."""

__version__ = "0.1.0"
