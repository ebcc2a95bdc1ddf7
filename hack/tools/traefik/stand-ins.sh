#!/usr/bin/env bash
# Writes the two stand-ins that go.mod (beside this script) replaces modules
# with, into <repo>/.cache/traefik (git-ignored), once each; both are
# generated from modules the Go module proxy serves rather than kept in the
# repository. Run it before `go mod tidy` or `go build` in this folder;
# hack/tools/knative-bin.sh and `make lint` do.
#
# - lego-v5.4.1: github.com/go-acme/lego/v5 v5.4.1 less six DNS providers
#   (edgedns, huaweicloud, oraclecloud, sakuracloud, ucloud, yandexcloud),
#   whose SDKs the proxy refuses ("This module version is not available").
#   Their folders go, and so do their import and case lines in
#   providers/dns/zz_gen_dns_providers.go, the one file that names them;
#   everything else is upstream, byte for byte. Only ACME DNS challenges
#   through those six providers are lost, which the tests never use. About
#   3 MB of Go.
# - go-http-auth: github.com/abbot/go-http-auth at the version traefik's
#   fork (github.com/containous/go-http-auth, which the proxy does not
#   serve) is based on, plus the one method the fork adds
#   (go-http-auth-stale/stale.go).
set -euo pipefail

version=v5.4.1
providers=(edgedns huaweicloud oraclecloud sakuracloud ucloud yandexcloud)
here=$(cd "$(dirname "$0")" && pwd)
cache=$(cd "$here/../../.." && pwd)/.cache/traefik

# Outside any module, so that this folder's replaces do not apply.
download() {
	(cd / && go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

auth_version=v0.4.1-0.20220112235402-e1cee1c72f2f
auth_out=$cache/go-http-auth
if [[ ! -f "$auth_out/.complete" ]]; then
	auth_src=$(download "github.com/abbot/go-http-auth@$auth_version")
	if [[ -z "$auth_src" || ! -f "$auth_src/go.mod" ]]; then
		echo "stand-ins.sh: go mod download github.com/abbot/go-http-auth@$auth_version gave no folder" >&2
		exit 1
	fi
	rm -rf "$auth_out.tmp"
	mkdir -p "$auth_out.tmp"
	cp "$auth_src"/*.go "$auth_src"/go.* "$auth_src/LICENSE" "$auth_out.tmp/"
	chmod -R u+w "$auth_out.tmp" # the module cache is read-only
	rm -f "$auth_out.tmp"/*_test.go
	sed '/^\/\/go:build ignore$/d' "$here/go-http-auth-stale/stale.go" >"$auth_out.tmp/stale.go"
	touch "$auth_out.tmp/.complete"
	rm -rf "$auth_out"
	mv "$auth_out.tmp" "$auth_out"
	echo "stand-ins.sh: wrote go-http-auth $auth_version with RequireAuthStale into $auth_out"
fi

out=$cache/lego-$version
if [[ -f "$out/.complete" ]]; then
	exit 0
fi

src=$(download "github.com/go-acme/lego/v5@$version")
if [[ -z "$src" || ! -f "$src/go.mod" ]]; then
	echo "stand-ins.sh: go mod download github.com/go-acme/lego/v5@$version gave no folder" >&2
	exit 1
fi

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$(dirname "$out")"
cp -R "$src" "$tmp"
chmod -R u+w "$tmp" # the module cache is read-only
gen="$tmp/providers/dns/zz_gen_dns_providers.go"
for p in "${providers[@]}"; do
	if [[ ! -d "$tmp/providers/dns/$p" ]] || ! grep -q "^	\"github.com/go-acme/lego/v5/providers/dns/$p\"$" "$gen"; then
		echo "stand-ins.sh: provider $p is not where lego $version had it; update this script" >&2
		exit 1
	fi
	rm -rf "${tmp:?}/providers/dns/$p"
	# The import, and each `case "<name>"[, "<alias>"]:` line with the
	# return under it.
	sed -i -e "\#^	\"github.com/go-acme/lego/v5/providers/dns/$p\"\$#d" \
		-e "/^	case .*:\$/{N;/\n		return $p\.NewDNSProvider()\$/d}" "$gen"
	if grep -q "\b$p\." "$gen"; then
		echo "stand-ins.sh: $gen still calls $p" >&2
		exit 1
	fi
done
if [[ -n "$(gofmt -l "$gen" 2>&1)" ]]; then
	echo "stand-ins.sh: $gen is malformed after the edit" >&2
	exit 1
fi
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
echo "stand-ins.sh: wrote lego $version less ${providers[*]} into $out"
