#!/usr/bin/env bash
# Builds the control-plane binaries the end-to-end tests run (kube-apiserver,
# kubectl, etcd) from the Go module proxy at the versions pinned in the wrapper
# modules beside this script, into the folder given as $1.
#
# A cold build takes 10 to 17 minutes on 2 cores; with a warm Go build cache
# about a minute. Binaries already present with the right version stamp are
# kept, so running it again is cheap.
set -euo pipefail

out=${1:?usage: build.sh OUTPUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

kube_version=v1.36.5
stamp="$out/.versions"
want="kube=$kube_version etcd=v3.6.16"
if [[ -x "$out/kube-apiserver" && -x "$out/kubectl" && -x "$out/etcd" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
  echo "control-plane binaries in $out are current ($want)"
  exit 0
fi

# shellcheck source=kube-ldflags.sh
. "$here/kube-ldflags.sh"
ldflags=$(kube_ldflags "$kube_version")

echo "building kube-apiserver and kubectl $kube_version into $out (cold: 10-17 min)"
(cd "$here/kube" && go build -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
echo "building etcd v3.6.16 into $out"
(cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
echo "$want" > "$stamp"
"$out/kube-apiserver" --version
