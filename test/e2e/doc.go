// Package e2e tests the mutator binary end to end: a real kube-apiserver and
// etcd (package cluster) call the webhook over HTTPS through a
// MutatingWebhookConfiguration, and the tests check the objects as the API
// server stored them.
//
// Run with `make test-e2e` or
//
//	go test ./test/e2e/... -count=1 -v -timeout 15m
//
// The control-plane binaries come from $KUBE_ASSETS (see cluster.AssetsDir).
package e2e
