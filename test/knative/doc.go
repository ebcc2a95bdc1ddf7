// Package knative holds tests for the Knative packaging of the mutator:
// the manifests in deploy/knative/ and the func.yaml at the repository root.
// The func-go scaffold build-and-run test lives in the scaffold subpackage,
// the function behind Knative's real queue-proxy in queueproxy, the ko image
// pushed to and pulled from a loopback registry in image, and `func deploy`
// (func's Knative deployer) against a real kube-apiserver in funcdeploy.
//
// It is a separate Go module so that knative.dev/serving, knative.dev/func
// and their dependencies stay out of the mutator's own go.mod.
package knative
