//go:build tools

// Package tools pins kind, which creates kinfer's kind cluster, and crictl, which
// goes into its node image (built by `kinfer cluster build --set kind`).
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/kind"
)
