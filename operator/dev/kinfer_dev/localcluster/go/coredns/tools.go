//go:build tools

// Package tools pins CoreDNS, the cluster DNS image of kinfer's kind node image
// (built by `kinfer cluster build --set kind`).
package tools

import (
	_ "github.com/coredns/coredns"
)
