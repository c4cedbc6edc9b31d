//go:build tools

// Package tools pins the helm command that tests/control-plane/build builds.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
