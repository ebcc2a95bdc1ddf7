#!/usr/bin/env bash
# make load: build bin/mutator and bin/load, start the mutator on loopback
# with TLS (a throwaway CA and serving certificate for 127.0.0.1), wait for
# readiness, then run
#   (a) a closed loop: LOAD_WORKERS (8) workers for LOAD_DURATION (10s)
#   (b) an open loop:  LOAD_RATE (1000) req/s for LOAD_DURATION
# validating every answer (-expect-patch), print both summaries and the
# mutator's resident set (VmRSS) idle before, right after each run and idle
# after, then stop it with SIGTERM and require exit status 0.
# LOAD_FLAGS adds flags to both runs, e.g. LOAD_FLAGS=-http1 or -json.
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
DURATION=${LOAD_DURATION:-10s}
RATE=${LOAD_RATE:-1000}
WORKERS=${LOAD_WORKERS:-8}
read -r -a EXTRA <<<"${LOAD_FLAGS:-}"

"$GO" build -o bin/mutator ./cmd/mutator
"$GO" build -o bin/load ./test/load

work=$(mktemp -d)
pid=
cleanup() {
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

bin/load -gen-cert "$work" >/dev/null
port=$(bin/load -free-port)
metrics_port=$(bin/load -free-port)
while [[ "$metrics_port" == "$port" ]]; do metrics_port=$(bin/load -free-port); done

# Only this configuration: nothing from the caller's environment.
env -i \
	REGISTRY=registry.example.com/mirror IMAGE_PULL_SECRET=regcred \
	FORCE_IMAGE_PULL_POLICY=true IMAGE_PULL_POLICY_TO_FORCE=IfNotPresent \
	DEFAULT_STORAGE_CLASS=standard LOG_LEVEL=info \
	PORT="$port" METRICS_PORT="$metrics_port" \
	TLS_CERT_FILE="$work/tls.crt" TLS_KEY_FILE="$work/tls.key" \
	bin/mutator serve 2>"$work/mutator.log" &
pid=$!
url="https://127.0.0.1:$port/mutate"
if ! bin/load -url "$url" -cacert "$work/ca.crt" -check-ready -wait-ready 30s; then
	echo "mutator did not become ready; its log:" >&2
	cat "$work/mutator.log" >&2
	exit 1
fi

rss() { awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status"; }
# cpu prints the mutator's CPU time so far (user + system) in clock ticks.
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
# cpu_per_request BEFORE AFTER REQUESTS_FILE prints the server's CPU time per request.
cpu_per_request() {
	local n
	n=$(awk '/^requests/ { print $2; exit }' "$3")
	awk -v b="$1" -v a="$2" -v n="$n" -v hz="$hz" 'BEGIN {
		if (n > 0) printf "mutator CPU %.2f s for %d requests: %.0f µs per request\n", (a - b) / hz, n, (a - b) / hz / n * 1e6 }'
}

echo "mutator pid $pid on $url (metrics on :$metrics_port), $(nproc) CPUs"
rss_idle_before=$(rss)
echo "RSS idle before load: $rss_idle_before"
status=0

echo
echo "== (a) closed loop: $WORKERS workers for $DURATION"
cpu0=$(cpu)
bin/load -url "$url" -cacert "$work/ca.crt" -expect-patch -workers "$WORKERS" -duration "$DURATION" "${EXTRA[@]}" | tee "$work/a.txt" || status=1
cpu_per_request "$cpu0" "$(cpu)" "$work/a.txt"
rss_closed=$(rss)
echo "RSS right after (a): $rss_closed"

echo
echo "== (b) open loop: $RATE req/s for $DURATION"
cpu0=$(cpu)
bin/load -url "$url" -cacert "$work/ca.crt" -expect-patch -rate "$RATE" -duration "$DURATION" "${EXTRA[@]}" | tee "$work/b.txt" || status=1
cpu_per_request "$cpu0" "$(cpu)" "$work/b.txt"
rss_open=$(rss)
echo "RSS right after (b): $rss_open"

sleep 3
echo
echo "RSS idle before load $rss_idle_before; after (a) $rss_closed; after (b) $rss_open; idle 3 s after load $(rss); peak (VmHWM) $(hwm)"

kill -TERM "$pid"
exit_status=0
wait "$pid" || exit_status=$?
pid=
if [[ $exit_status -ne 0 ]]; then
	echo "mutator exited $exit_status after SIGTERM; its log:" >&2
	tail -20 "$work/mutator.log" >&2
	exit 1
fi
echo "mutator exited 0 after SIGTERM"
if [[ $status -ne 0 ]]; then
	echo "load: some requests failed" >&2
fi
exit "$status"
