//go:build tools

// Package tools pins the Prometheus that runs inside kinfer's kind cluster, with
// Kubernetes service discovery (Debian's build has none). Built by
// `kinfer cluster build --set kind`.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
