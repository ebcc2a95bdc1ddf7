// Package cluster proves on a real node what the other suites prove against
// an API server alone: a kubelet pulls what the mutator admitted, from the
// mirror, with the pull secret the mutator injected (issue 19).
//
// The test binary isolates itself (package node): as root, it runs again in
// network, mount and PID namespaces of its own, where it starts etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd, the
// kubelet and kube-proxy, two registries (the "origin" standing for Docker
// Hub and the like, and the "mirror", with TLS and basic auth, both logging
// every request; package registry) and the mutator as a process, registered
// with the shipped webhook configuration (failurePolicy Fail). The images
// are built from the small Go programs in cmd/ (package image).
//
// The tests prove that a Deployment naming the origin pulls every container
// and image volume from the mirror as the pull secret's user, the origin
// untouched; that the mirror refuses a pull without the secret; that the
// forced pull policy Always pulls again when a container restarts; that
// the mutator deployed with deploy/standalone (two replicas behind their
// Service) loses no create to a rolling restart or a killed replica; that
// the Helm chart, installed with Helm's SDK, gets two replicas Ready that
// the API server reaches through their Service; that on Knative Serving,
// installed by the first test that needs it (package knative, traefik as
// its networking layer), a Knative Service becomes Ready, answers through
// traefik and scales to zero and back through the activator; and
// they log figures (node Ready time, Pod create to Running with and
// without the webhook, the webhook's latency and memory, Knative's install
// and cold-start times).
//
// Run with `make test-cluster` (as root; otherwise every test skips, saying
// why), or, with the binaries in place (hack/tools/node-bin.sh and
// hack/tools/knative-bin.sh fill NODE_ASSETS and KNATIVE_ASSETS),
//
//	cd test/cluster && go test -count=1 -v -timeout 20m ./...
package cluster
