// Package helm tests the Helm chart in deploy/helm/mutator with Helm's Go
// SDK: lint, rendering with the defaults and with every option, the values
// schema, and a server-side dry run plus a real install, upgrade and
// uninstall on the end-to-end kube-apiserver (test/e2e/cluster). The
// kustomize manifests in deploy/standalone are rendered from the chart by
// `make generate` (hack/generate), which also checks that each variant
// builds to what the chart renders; `make verify` fails when they are stale.
//
// It is a module of its own because Helm's SDK pulls in a large dependency
// graph (and newer k8s.io modules than the mutator's own go.mod); it uses the
// mutator's module only for the cluster launcher, through the replace
// directive in go.mod.
package helm
