//go:build tools

// Package tools pins rclone, which the local cluster's pod runner runs for the pods'
// fetch-* init containers. Debian's rclone (1.60) has no --http-no-escape (rclone >= 1.67),
// which a model URL with a query needs. Built by `kinfer cluster build`; the
// kinfer-storage-initializer image builds the same version (a test keeps them equal).
package tools

import (
	_ "github.com/rclone/rclone"
)
