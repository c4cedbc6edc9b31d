//go:build tools

// Package tools pins the etcd server main package that
// tests/control-plane/build builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
