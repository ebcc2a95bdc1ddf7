// Package knative holds tests for the Knative packaging of the mutator:
// the manifests in deploy/knative/ and the func.yaml at the repository root.
// The func-go scaffold build-and-run test lives in the scaffold subpackage.
//
// It is a separate Go module so that knative.dev/serving, knative.dev/func
// and their dependencies stay out of the mutator's own go.mod.
package knative
