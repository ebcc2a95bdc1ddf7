#!/usr/bin/env bash
# Runs the test the patches in this folder add to k8s.io/apiserver, against
# that module as published (from the Go module proxy or cache): it must
# fail without the change to dispatcher.go and pass with it, along with the
# rest of the package's tests. Needs go and git; nothing of this repository
# is built. See README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=./pkg/admission/plugin/policy/mutating/
for pair in 1.36:v0.36.5 1.37:v0.37.2; do
	minor=${pair%%:*} version=${pair#*:}
	patch="$here/mutating-admission-policy-reinvocation-$minor.patch"
	dir=$(cd "$work" && go mod download -json "k8s.io/apiserver@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	copy="$work/apiserver-$version"
	cp -r "$dir" "$copy" && chmod -R u+w "$copy"
	cd "$copy"
	echo "== k8s.io/apiserver $version: the test alone must fail"
	git apply -p5 --include='*_test.go' "$patch"
	if GOFLAGS=-mod=mod go test -count=1 -run TestDispatcherReinvocation "$pkg" >"$work/out" 2>&1; then
		echo "the test passes without the change: it tests nothing"; exit 1
	fi
	grep -E '^\s+--- FAIL|reinvocation_test.go' "$work/out" || true
	echo "== k8s.io/apiserver $version: with the change, the package's tests must pass"
	git apply -p5 --exclude='*_test.go' "$patch"
	GOFLAGS=-mod=mod go test -count=1 "$pkg" ./pkg/admission/
	cd "$here"
done
