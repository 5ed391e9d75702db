"""kinfer-dev: kinfer's developer tooling (the local cluster, the autoscaling simulator and
benchmarks, the runtime benchmark and load tools). Not part of the operator's wheel or image."""

__version__ = "0.1.0"
