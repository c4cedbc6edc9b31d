//go:build tools

// Package tools pins cert-manager's controller, which
// tests/control-plane/build-cert-manager builds. v1.11.5 is the last release
// whose controller is a package of the main module (see that script).
package tools

import (
	_ "github.com/cert-manager/cert-manager/cmd/controller"
)
