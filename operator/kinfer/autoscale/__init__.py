"""Autoscaling: metrics -> decision (pure policy), the Prometheus reader, the simulator."""
