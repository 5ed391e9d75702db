"""kinfer's local cluster: control plane, KWOK nodes, pod runner and Prometheus as processes."""
