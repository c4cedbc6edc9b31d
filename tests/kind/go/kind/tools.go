//go:build tools

// Package tools pins what tests/kind/build builds from sigs.k8s.io/kind,
// so that `go mod tidy` keeps everything they need in go.sum.
package tools

import (
	_ "sigs.k8s.io/kind"
)
