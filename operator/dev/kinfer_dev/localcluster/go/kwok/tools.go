//go:build tools

// Package tools pins the KWOK binary kinfer's local cluster builds from this
// module. KWOK lives in its own module because its k8s.io/* dependencies are
// not the ones k8s.io/kubernetes pins.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
