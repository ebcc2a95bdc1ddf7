#!/usr/bin/env bash
# Puts the node binaries of the cluster tests (test/cluster) into the folder
# given as $1: kubelet, kube-controller-manager, kube-scheduler, kube-proxy
# (k8s.io/kubernetes v1.36.5), containerd, containerd-shim-runc-v2, ctr
# (v2.4.2) and coredns (v1.15.0). It unpacks ../shared/node-bin/ when that
# folder is there (after checking its SHA256SUMS), else builds them from the
# Go module proxy with the wrapper modules hack/tools/node and
# hack/tools/containerd (cold, on 2 cores: about 25 minutes; warm, about a
# minute); coredns is always built (hack/tools/coredns). Binaries already
# present with the right version stamp are kept.
#
# As root it also installs the Debian packages the node needs when missing:
# runc, containernetworking-plugins and iptables (and iproute2).
set -euo pipefail

out=${1:?usage: node-bin.sh OUTPUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
shared=${NODE_BIN_SHARED:-$(cd "$here/../.." && pwd)/../shared/node-bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

kube_version=v1.36.5
containerd_version=v2.4.2
coredns_version=v1.15.0 # hack/tools/coredns/go.mod
tarball=node-bin-$kube_version-linux-amd64.tar.xz
bins=(kubelet kube-controller-manager kube-scheduler kube-proxy containerd containerd-shim-runc-v2 ctr)

install_packages() {
	local missing=()
	command -v runc >/dev/null || missing+=(runc)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v ip >/dev/null || missing+=(iproute2)
	[[ -x /usr/lib/cni/bridge || -x /opt/cni/bin/bridge ]] || missing+=(containernetworking-plugins)
	if ((${#missing[@]} == 0)); then
		return
	fi
	if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
		echo "node-bin: the cluster tests need these packages: ${missing[*]}" >&2
		return
	fi
	echo "node-bin: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

current() {
	local b
	for b in "${bins[@]}"; do
		[[ -x "$out/$b" ]] || return 1
	done
	[[ "$(cat "$out/.versions" 2>/dev/null)" == "$want" ]]
}

# CoreDNS is not in ../shared/node-bin: it is always built, from the wrapper
# module hack/tools/coredns (only the plugins the tests use; cold, about 2
# minutes), and kept while its stamp matches.
coredns() {
	local stamp="$out/.coredns-version"
	if [[ -x "$out/coredns" && "$(cat "$stamp" 2>/dev/null)" == "$coredns_version" ]]; then
		return
	fi
	echo "node-bin: building coredns $coredns_version into $out (cold: about 2 min)"
	(cd "$here/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/coredns" .)
	echo "$coredns_version" >"$stamp"
}

install_packages
coredns

stamp="$out/.versions"
want="kube=$kube_version containerd=$containerd_version"
if current; then
	echo "node binaries in $out are current ($want)"
	exit 0
fi

if [[ -f "$shared/$tarball" ]]; then
	echo "node-bin: unpacking $shared/$tarball into $out"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	tar -xJf "$shared/$tarball" -C "$tmp"
	(cd "$tmp" && sha256sum --quiet -c "$shared/SHA256SUMS")
	for b in "${bins[@]}"; do
		mv -f "$tmp/$b" "$out/$b"
	done
	echo "$want" >"$stamp"
	exit 0
fi

# Version-stamped (kube-ldflags.sh); CGO_ENABLED=0, as the shared binaries
# are built.
# shellcheck source=kube-ldflags.sh
. "$here/kube-ldflags.sh"
ldflags=$(kube_ldflags "$kube_version")
echo "node-bin: building kubelet, kube-controller-manager, kube-scheduler and kube-proxy $kube_version into $out (cold: about 20 min)"
(cd "$here/node" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" \
	k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy)
echo "node-bin: building containerd, containerd-shim-runc-v2 and ctr $containerd_version into $out (cold: about 4 min)"
(cd "$here/containerd" && CGO_ENABLED=0 go build -trimpath -tags "no_btrfs no_devmapper no_zfs" \
	-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" -o "$out/" \
	github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
	github.com/containerd/containerd/v2/cmd/ctr)
echo "$want" >"$stamp"
"$out/kubelet" --version
