//go:build tools

// Package tools pins helm, which the chart's tests (manifests/helm/kinfer/) render, lint,
// install and uninstall with (built on demand by `kinfer cluster build --set helm`).
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
