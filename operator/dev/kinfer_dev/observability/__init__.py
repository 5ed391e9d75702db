"""Build-time observability artefacts: the Grafana dashboards (`make dashboards`)."""
