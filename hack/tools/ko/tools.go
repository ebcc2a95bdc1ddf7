//go:build tools

// Package ko pins github.com/google/ko, the image builder `make image` and
// test/knative/image use, in a module of its own: its dependency graph
// (go-containerregistry, sigstore, cobra) stays out of the mutator's go.mod
// and out of test/knative's. Build it with
//
//	cd hack/tools/ko && go build -o <dir>/ko github.com/google/ko
package ko

import _ "github.com/google/ko"
