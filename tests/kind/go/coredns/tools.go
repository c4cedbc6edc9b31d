//go:build tools

// Package tools pins what tests/kind/build builds from github.com/coredns/coredns,
// so that `go mod tidy` keeps everything they need in go.sum.
package tools

import (
	_ "github.com/coredns/coredns"
)
