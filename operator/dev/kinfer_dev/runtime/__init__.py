"""Data-plane tooling: test models, model repositories, local Triton and kinfer-ort-server
processes, the load generator and the runtime bench."""
