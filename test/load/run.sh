#!/usr/bin/env bash
# make load: build bin/mutator and bin/load, start on loopback with TLS (a
# throwaway CA and serving certificate for 127.0.0.1)
#   - the mutator, and
#   - the floor (bin/load -serve-floor): the least a Go HTTPS webhook does
#     per review, with the mutator's TLS settings and certificate files,
# each as its own process, wait for both to be ready, then run against each,
# with the same client settings,
#   (a) a closed loop: LOAD_WORKERS (8) workers for LOAD_DURATION (10s)
#   (b) an open loop:  LOAD_RATE (1000) req/s for LOAD_DURATION
# validating every answer (-expect-patch for the mutator; the floor never
# patches). Prints each run's summary, then a table: req/s, p50/p90/p99/max,
# each server's CPU per review (user + system from /proc/PID/stat) and the
# ratio mutator / floor; and the mutator's resident set (VmRSS) idle before,
# right after each of its runs and idle after. Stops both with SIGTERM and
# requires exit status 0 from each.
#
# The client speaks HTTP/1.1 over keep-alive connections, as kube-apiserver
# does to webhooks. LOAD_FLAGS adds client flags to every run, e.g.
# LOAD_FLAGS=-http2 (then the mutator gets ENABLE_HTTP2=true and the floor
# -http2, so that both offer HTTP/2) or LOAD_FLAGS=-json.
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
DURATION=${LOAD_DURATION:-10s}
RATE=${LOAD_RATE:-1000}
WORKERS=${LOAD_WORKERS:-8}
read -r -a EXTRA <<<"${LOAD_FLAGS:-}"
http2=false
for f in "${EXTRA[@]}"; do
	case "$f" in -http2 | --http2 | -http2=true | --http2=true) http2=true ;; esac
done

"$GO" build -o bin/mutator ./cmd/mutator
"$GO" build -o bin/load ./test/load

work=$(mktemp -d)
pid=
fpid=
cleanup() {
	for p in "$pid" "$fpid"; do
		if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
			kill -KILL "$p" 2>/dev/null || true
			wait "$p" 2>/dev/null || true
		fi
	done
	rm -rf "$work"
}
trap cleanup EXIT

bin/load -gen-cert "$work" >/dev/null
port=$(bin/load -free-port)
metrics_port=$(bin/load -free-port)
while [[ "$metrics_port" == "$port" ]]; do metrics_port=$(bin/load -free-port); done
floor_port=$(bin/load -free-port)
while [[ "$floor_port" == "$port" || "$floor_port" == "$metrics_port" ]]; do floor_port=$(bin/load -free-port); done

# Only this configuration: nothing from the caller's environment.
mutator_env=(
	REGISTRY=registry.example.com/mirror IMAGE_PULL_SECRET=regcred
	FORCE_IMAGE_PULL_POLICY=true IMAGE_PULL_POLICY_TO_FORCE=IfNotPresent
	DEFAULT_STORAGE_CLASS=standard LOG_LEVEL=info
	PORT="$port" METRICS_PORT="$metrics_port"
	TLS_CERT_FILE="$work/tls.crt" TLS_KEY_FILE="$work/tls.key"
)
floor_flags=()
if $http2; then
	# The mutator offers HTTP/2 only when asked to; so does the floor.
	mutator_env+=(ENABLE_HTTP2=true)
	floor_flags+=(-http2)
fi
env -i "${mutator_env[@]}" bin/mutator serve 2>"$work/mutator.log" &
pid=$!
# The floor collects garbage at the mutator's defaults (GOGC=400 with a
# 96 MiB soft limit, function/app), so the comparison is of work done, not
# of garbage-collector settings.
env -i GOGC=400 GOMEMLIMIT=96MiB \
	bin/load -serve-floor -listen "127.0.0.1:$floor_port" -tls-cert "$work/tls.crt" -tls-key "$work/tls.key" \
	"${floor_flags[@]}" 2>"$work/floor.log" &
fpid=$!
url="https://127.0.0.1:$port/mutate"
furl="https://127.0.0.1:$floor_port/mutate"
for server in mutator floor; do
	u=$url
	[[ $server == floor ]] && u=$furl
	if ! bin/load -url "$u" -cacert "$work/ca.crt" -check-ready -wait-ready 30s; then
		echo "$server did not become ready; its log:" >&2
		cat "$work/$server.log" >&2
		exit 1
	fi
done

rss() { awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }
hwm() { awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }
# cpu PID prints the process's CPU time so far (user + system) in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# field FILE KEY prints the value of "KEY" in a summary written by
# -summary-file (indented JSON, one key per line; KEY names one value).
field() {
	[[ -s "$1" ]] || return 0 # no summary: the run did not happen
	awk -v k="\"$2\":" '$1 == k { v = $2; sub(/,$/, "", v); gsub(/"/, "", v); print v; exit }' "$1"
}

status=0
# measure NAME SERVER_PID URL [FLAGS...] runs bin/load against URL with
# FLAGS and LOAD_FLAGS, keeping its summary in $work/NAME.json and the CPU
# ticks the server used meanwhile in $work/NAME.cpu.
measure() {
	local name=$1 p=$2 u=$3 c0 c1 n
	shift 3
	c0=$(cpu "$p")
	bin/load -url "$u" -cacert "$work/ca.crt" -summary-file "$work/$name.json" "$@" "${EXTRA[@]}" || status=1
	c1=$(cpu "$p")
	echo $((c1 - c0)) >"$work/$name.cpu"
	n=$(field "$work/$name.json" requests)
	awk -v t="$((c1 - c0))" -v n="${n:-0}" -v hz="$hz" -v who="${name%%-*}" 'BEGIN {
		if (n > 0) printf "%s CPU %.2f s for %d requests: %.0f µs per request\n", who, t / hz, n, t / hz / n * 1e6 }'
}

echo "mutator pid $pid on $url (metrics on :$metrics_port), floor pid $fpid on $furl, $(nproc) CPUs"
rss_idle_before=$(rss "$pid")
echo "RSS idle before load: $rss_idle_before"

echo
echo "== (a) closed loop: $WORKERS workers for $DURATION, mutator"
measure mutator-closed "$pid" "$url" -expect-patch -workers "$WORKERS" -duration "$DURATION"
rss_closed=$(rss "$pid")
echo "RSS right after (a): $rss_closed"
echo
echo "== (a) closed loop: $WORKERS workers for $DURATION, floor"
measure floor-closed "$fpid" "$furl" -workers "$WORKERS" -duration "$DURATION"

echo
echo "== (b) open loop: $RATE req/s for $DURATION, mutator"
measure mutator-open "$pid" "$url" -expect-patch -rate "$RATE" -duration "$DURATION"
rss_open=$(rss "$pid")
echo "RSS right after (b): $rss_open"
echo
echo "== (b) open loop: $RATE req/s for $DURATION, floor"
measure floor-open "$fpid" "$furl" -rate "$RATE" -duration "$DURATION"

# row NAME LABEL prints one line of the table from NAME's summary and CPU.
row() {
	local j="$work/$1.json"
	[[ -s "$j" ]] || { printf "%-28s (no summary)\n" "$2"; return; }
	awk -v label="$2" -v proto="$(field "$j" protocol)" -v n="$(field "$j" requests)" -v errs="$(field "$j" errors)" \
		-v tput="$(field "$j" throughput)" -v p50="$(field "$j" p50)" -v p90="$(field "$j" p90)" \
		-v p99="$(field "$j" p99)" -v mx="$(field "$j" max)" -v t="$(cat "$work/$1.cpu")" -v hz="$hz" 'BEGIN {
		cpu = n > 0 ? t / hz / n * 1e6 : 0
		printf "%-28s %-9s %8d %6d %9.1f %7.3f %7.3f %7.3f %8.3f %9.0f\n", label, proto, n, errs, tput, p50, p90, p99, mx, cpu }'
}
# ratio A B prints A's server CPU per request over B's.
ratio() {
	awk -v ta="$(cat "$work/$1.cpu")" -v na="$(field "$work/$1.json" requests)" \
		-v tb="$(cat "$work/$2.cpu")" -v nb="$(field "$work/$2.json" requests)" 'BEGIN {
		if (na > 0 && nb > 0 && tb > 0) printf "%.2f", (ta / na) / (tb / nb); else printf "n/a" }'
}

echo
echo "== summary: latencies in ms; CPU is the server's user + system time per request (/proc/PID/stat), the client sharing the same $(nproc) CPUs"
printf "%-28s %-9s %8s %6s %9s %7s %7s %7s %8s %9s\n" run protocol requests errors "req/s" p50 p90 p99 max "CPU µs"
row mutator-closed "(a) closed $WORKERS, mutator"
row floor-closed "(a) closed $WORKERS, floor"
row mutator-open "(b) open $RATE/s, mutator"
row floor-open "(b) open $RATE/s, floor"
echo "mutator CPU per review / floor CPU per review: (a) closed $(ratio mutator-closed floor-closed)x, (b) open $(ratio mutator-open floor-open)x"

sleep 3
echo
echo "RSS idle before load $rss_idle_before; after (a) $rss_closed; after (b) $rss_open; idle 3 s after load $(rss "$pid"); peak (VmHWM) $(hwm "$pid"); floor peak $(hwm "$fpid")"

exit_status=0
kill -TERM "$pid" "$fpid"
wait "$pid" || exit_status=$?
pid=
if [[ $exit_status -ne 0 ]]; then
	echo "mutator exited $exit_status after SIGTERM; its log:" >&2
	tail -20 "$work/mutator.log" >&2
	exit 1
fi
echo "mutator exited 0 after SIGTERM"
wait "$fpid" || exit_status=$?
fpid=
if [[ $exit_status -ne 0 ]]; then
	echo "floor exited $exit_status after SIGTERM; its log:" >&2
	tail -20 "$work/floor.log" >&2
	exit 1
fi
echo "floor exited 0 after SIGTERM"
if [[ $status -ne 0 ]]; then
	echo "load: some requests failed" >&2
fi
exit "$status"
