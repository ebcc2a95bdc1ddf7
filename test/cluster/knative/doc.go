// Package knative installs Knative Serving v0.50.0 on the cluster of package
// node, with traefik's experimental Knative provider as its networking
// layer, from what hack/tools/knative-bin.sh put into the assets folder:
// Serving's five images (an OCI layout built by ko), its manifests (the
// module's config/core with the files its repository links in from
// knative.dev/networking and knative.dev/caching) and the traefik binary.
//
// Install pushes the images through a callback (the caller decides which
// registry the node pulls them from), applies the CRDs and then the core
// manifests with kubectl, their ko:// references replaced by the pushed
// digests and a few ConfigMap keys set (ingress class, domain, tag
// resolution, and what the caller adds), and runs traefik as a process of
// the test's namespaces on the node's address, watching Knative's Ingresses
// with the admin kubeconfig and sending traffic to Service ClusterIPs, which
// kube-proxy serves. The Services named as traefik's public and private
// load balancers exist too, without selectors, their endpoints the node's
// address, so that cluster DNS resolves the names Knative gives Routes.
package knative
