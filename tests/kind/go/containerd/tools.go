//go:build tools

// Package tools pins what tests/kind/build builds from github.com/containerd/containerd/v2,
// so that `go mod tidy` keeps everything they need in go.sum.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
