# Sourced by build.sh and node-bin.sh: kube_ldflags VERSION prints the
# -ldflags that stamp Kubernetes binaries with VERSION. The API server and
# the kubelet report it, and kubectl refuses a version it cannot parse, so
# the stamp is not optional.
kube_ldflags() {
	local version=$1 major minor flags="-s -w" pkg
	major=${version#v}; major=${major%%.*}
	minor=${version#v*.}; minor=${minor%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	echo "$flags"
}
