//go:build tools

// Package tools pins the kwok command that tests/control-plane/build builds.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
