"""What kinfer ships for Prometheus: recording rules and alerts (docs/observability.md)."""
