"""kopf handlers and timers: thin wiring of the pure parts to the API server."""
