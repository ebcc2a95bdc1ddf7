#!/usr/bin/env bash
# Puts what the Knative tests of the cluster suite (test/cluster) need into
# the folder given as $1, all built from the Go module proxy:
#
#   traefik       traefik v3.7.13, the networking layer (its experimental
#                 Knative provider), from the wrapper module hack/tools/traefik
#                 (cold, on 2 cores: about 8 minutes and 3.1 GB of memory);
#   images/       an OCI layout with Knative Serving v0.50.0's controller,
#                 activator, autoscaler, webhook and queue images, built by ko
#                 v0.19.1 (hack/tools/ko) in the wrapper module
#                 hack/tools/knative onto the function image's own base
#                 (.ko.yaml's defaultBaseImage, which test/knative's
#                 `cmd/image -print-base` writes into ko's cache), so nothing
#                 is fetched but modules (cold: about 3.5 minutes, 1.3 GB; ko
#                 itself about 3 more if absent);
#   config/       Serving's CRDs and core configuration as its module ships
#                 them (config/core), plus the files the serving repository
#                 links in from knative.dev/networking and knative.dev/caching,
#                 which the module zip leaves out (the symlinks), each taken
#                 from the version Serving's go.mod requires.
#
# Warm (Go build cache filled), traefik and the images take about 10 s each;
# both are reproducible (the same binary and image digests from any cache).
# Each piece is rebuilt only when missing or when its stamp (the versions and
# the hash of its wrapper folder's files) changed, so a warm run reads a few
# files and exits.
set -euo pipefail

out=${1:?usage: knative-bin.sh OUTPUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The version a wrapper's go.mod requires of a module.
required() { awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"; }
# The hash of the files of a wrapper folder (go.mod, go.sum, stand-ins,
# scripts): what decides what it builds.
digest() { find "$1" -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16; }
# Whether stamp file $1 holds $2 and every other path given exists.
current() {
	local stamp=$1 want=$2
	shift 2
	[[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]] || return 1
	local p
	for p in "$@"; do
		[[ -e "$p" ]] || return 1
	done
}
took() { echo "$(($(date +%s) - $1)) s"; }

traefik_dir=$here/traefik
knative_dir=$here/knative
traefik_version=$(required "$traefik_dir" github.com/traefik/traefik/v3)
serving_version=$(required "$knative_dir" knative.dev/serving)
ko_version=$(required "$here/ko" github.com/google/ko)

# traefik, with its version string set as its release builds set it.
want="traefik=$traefik_version $(digest "$traefik_dir")"
if current "$out/.traefik" "$want" "$out/traefik"; then
	echo "knative-bin: traefik $traefik_version in $out is current"
else
	began=$(date +%s)
	echo "knative-bin: building traefik $traefik_version into $out (cold: about 8 min, 3.1 GB)"
	bash "$traefik_dir/stand-ins.sh"
	(cd "$traefik_dir" && CGO_ENABLED=0 GOWORK=off go build -trimpath \
		-ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$traefik_version" \
		-o "$out/traefik.tmp" github.com/traefik/traefik/v3/cmd/traefik)
	mv -f "$out/traefik.tmp" "$out/traefik"
	echo "$want" >"$out/.traefik"
	echo "knative-bin: traefik built in $(took "$began")"
fi

# Serving's images. ko is the binary test/knative builds too (same path).
# The base: passwd and group naming root and nonroot, /tmp, user 65532 (the
# user of Knative's release base, which Serving's Deployments need: the
# kubelet checks runAsNonRoot against a numeric user).
base=$(awk '$1 == "defaultBaseImage:" { print $2 }' "$root/.ko.yaml")
want="serving=$serving_version ko=$ko_version base=$base $(digest "$knative_dir")"
if current "$out/.images" "$want" "$out/images/index.json"; then
	echo "knative-bin: Knative Serving $serving_version images in $out/images are current"
else
	began=$(date +%s)
	ko=$root/.cache/bin/ko-$ko_version
	if [[ ! -x "$ko" ]]; then
		echo "knative-bin: building ko $ko_version into $ko"
		mkdir -p "$(dirname "$ko")"
		(cd "$here/ko" && CGO_ENABLED=0 GOWORK=off go build -trimpath -o "$ko.tmp" github.com/google/ko)
		mv -f "$ko.tmp" "$ko"
	fi
	kocache=$root/.cache/knative/ko
	written=$(cd "$root/test/knative" && GOWORK=off go run ./cmd/image -print-base)
	if [[ "$base" != *"@$written" ]]; then
		echo "knative-bin: .ko.yaml names $base, the generator wrote $written (test/knative/image says which is stale)" >&2
		exit 1
	fi
	echo "knative-bin: building Knative Serving $serving_version's images with ko $ko_version onto $base (cold: about 3.5 min)"
	rm -rf "$out/images.tmp"
	# -B names each image by its command (knative.test/serving/controller),
	# a name the installer never uses: it pushes by digest. --push=false
	# with --oci-layout-path writes the layout and nothing else. ko would
	# read this repository's git state for its ldflags templates (none
	# here) and log it, dirty or not; the ceiling keeps git out of it.
	log="$out/ko-build.log"
	if ! (cd "$knative_dir" && GOWORK=off GIT_CEILING_DIRECTORIES="$here" KOCACHE="$kocache" \
		KO_DEFAULTBASEIMAGE="$base" KO_DOCKER_REPO=knative.test/serving \
		"$ko" build --push=false -B --sbom=none --platform=linux/amd64 \
		--oci-layout-path="$out/images.tmp" \
		knative.dev/serving/cmd/controller knative.dev/serving/cmd/activator \
		knative.dev/serving/cmd/autoscaler knative.dev/serving/cmd/webhook \
		knative.dev/serving/cmd/queue) >"$log" 2>&1; then
		cat "$log" >&2
		echo "knative-bin: ko build failed (log above, kept in $log)" >&2
		exit 1
	fi
	rm -rf "$out/images"
	mv "$out/images.tmp" "$out/images"
	echo "$want" >"$out/.images"
	echo "knative-bin: images built in $(took "$began")"
fi

# Serving's manifests: its module's config/core, and what its repository
# links in (config/core/300-resources/*.yaml and configmaps/network.yaml
# from knative.dev/networking's config, 300-imagecache.yaml from
# knative.dev/caching's).
networking_version=$(required "$knative_dir" knative.dev/networking)
caching_version=$(required "$knative_dir" knative.dev/caching)
want="serving=$serving_version networking=$networking_version caching=$caching_version"
if current "$out/.config" "$want" "$out/config/core"; then
	echo "knative-bin: Knative Serving $serving_version manifests in $out/config are current"
else
	dirs=$(cd "$knative_dir" && GOWORK=off go mod download -json knative.dev/serving knative.dev/networking knative.dev/caching |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	serving=$(grep "/knative.dev/serving@" <<<"$dirs")
	networking=$(grep "/knative.dev/networking@" <<<"$dirs")
	caching=$(grep "/knative.dev/caching@" <<<"$dirs")
	tmp="$out/config.tmp"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	cp -R "$serving/config/core" "$tmp/core"
	for f in certificate domain-claim ingress serverlessservice; do
		cp "$networking/config/$f.yaml" "$tmp/core/300-resources/$f.yaml"
	done
	cp "$networking/config/config-network.yaml" "$tmp/core/configmaps/network.yaml"
	cp "$caching/config/image.yaml" "$tmp/core/300-imagecache.yaml"
	find "$tmp" -name '*.go' -delete
	chmod -R u+w "$tmp"
	rm -rf "$out/config"
	mv "$tmp" "$out/config"
	echo "$want" >"$out/.config"
	echo "knative-bin: copied Knative Serving $serving_version's manifests into $out/config"
fi
