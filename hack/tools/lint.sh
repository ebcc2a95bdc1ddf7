#!/usr/bin/env bash
# make lint: gofmt, go vet, golangci-lint (built once from the module proxy,
# pinned by hack/tools/golangci-lint/go.mod) and `go mod tidy -diff` on
# every module of the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

echo "lint: gofmt"
out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [[ -n "$out" ]]; then echo "gofmt would change: $out"; exit 1; fi

# The soak and load suites are behind build tags (make test-bounds): vet
# and lint them too.
tags=soak,load
echo "lint: go vet"
"$GO" vet -tags "$tags" ./...

bin=.cache/bin/golangci-lint
want=$(awk '$1 == "github.com/golangci/golangci-lint/v2" { print $2 }' hack/tools/golangci-lint/go.mod)
if [[ ! -x $bin ]] || ! "$bin" version 2>/dev/null | grep -q "${want#v}"; then
	echo "lint: building golangci-lint $want (once; cached in $bin)"
	mkdir -p .cache/bin
	(cd hack/tools/golangci-lint && "$GO" build -o "../../../$bin" github.com/golangci/golangci-lint/v2/cmd/golangci-lint)
fi
echo "lint: golangci-lint"
"$bin" run --build-tags "$tags" ./...

# Modules whose dependencies include module versions the proxy no longer
# serves (test/knative: knative.dev/func's test dependencies) are checked
# with -e, as their go.mod says to update them.
# hack/tools/traefik replaces a module with a copy generated into .cache
# (lego less the DNS providers the proxy refuses): write it first.
bash hack/tools/traefik/stand-ins.sh
for mod in $(git ls-files '*go.mod' 2>/dev/null || find . -name go.mod -not -path './.cache/*'); do
	dir=$(dirname "$mod")
	flags=()
	if grep -q 'go mod tidy -e' "$mod"; then flags=(-e); fi
	echo "lint: go mod tidy -diff in $dir"
	(cd "$dir" && "$GO" mod tidy -diff "${flags[@]}")
done
