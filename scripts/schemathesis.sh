#!/usr/bin/env bash
# Runs Schemathesis (`--checks all`, a fixed seed) against the gateway's own OpenAPI document,
# twice: on the demo (authentication off, tenants broken on purpose) and on a gateway with
# authentication on, called with a key scoped to one tenant. Schemathesis is installed once into
# a virtual environment in a cache directory (SCOREGATE_ST_CACHE, default
# ~/.cache/scoregate-schemathesis), outside the repository.
# Usage: scripts/schemathesis.sh [path to a built scoregate binary]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-$root/target/debug/scoregate}"
cache="${SCOREGATE_ST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scoregate-schemathesis}"
seed=20261204
examples=30

if [ ! -x "$cache/bin/st" ]; then
    python3 -m venv "$cache"
    "$cache/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4.32,<5" >&2
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most 60 s) until the server started as `pid`, writing to `log`, prints the address
# it listens on (`pattern`, a sed expression printing host:port; every server binds port 0, so
# no port is chosen before it is taken) and answers /readyz there; prints http://host:port.
# A server that exits, or never answers, fails the run with the end of its log.
wait_ready() {
    local pid="$1" log="$2" pattern="$3" address=""
    for _ in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server writing $log exited; its log ends:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        [ -n "$address" ] || address="$(sed -n "$pattern" "$log" | head -n 1)"
        if [ -n "$address" ] &&
            python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
                "http://$address/readyz" 2>/dev/null; then
            echo "http://$address"
            return 0
        fi
        sleep 0.5
    done
    echo "no answer from ${address:-the server writing $log} within 60 s; its log ends:" >&2
    tail -n 30 "$log" >&2
    return 1
}

run_st() {
    (cd "$work" && "$cache/bin/st" --config-file "$root/scripts/schemathesis.toml" run "$@" \
        --checks all --max-examples "$examples" --seed "$seed" --no-color)
}

echo "== schemathesis: the demo (authentication off)" >&2
"$binary" demo --bind 127.0.0.1:0 >"$work/demo.log" 2>&1 &
pids+=($!)
demo="$(wait_ready $! "$work/demo.log" 's|.*behind the gateway at http://\([0-9.:]*\).*|\1|p')"
status=0
run_st "$demo/openapi.json" || status=1

echo "== schemathesis: authentication on, a key scoped to contoso" >&2
mkdir -p "$work/gateway"
"$binary" emulate --bind 127.0.0.1:0 --tenants 6 \
    --write-config "$work/gateway/scoregate.toml" >"$work/emulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [ -s "$work/gateway/scoregate.toml" ] && break; sleep 0.5; done
"$binary" keygen --name contoso-portal --tenants contoso >"$work/key.txt" 2>/dev/null
key="$(grep -m1 '^sg_' "$work/key.txt")"
digest="$(sed -n 's/^sha256 = "\(.*\)"$/\1/p' "$work/key.txt")"
cat >>"$work/gateway/scoregate.toml" <<TOML

[[api_keys]]
name = "contoso-portal"
sha256 = "$digest"
tenants = ["contoso"]
requests_per_minute = 1000000
TOML
SCOREGATE__AUTH__ENABLED=true \
SCOREGATE__SERVER__BIND=127.0.0.1:0 \
SCOREGATE__HISTORY__URL="sqlite://$work/gateway/history.db" \
    "$binary" serve --config "$work/gateway/scoregate.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
gateway="$(wait_ready $! "$work/gateway.log" 's|.*scoregate is listening address=\([0-9.:]*\).*|\1|p')"
run_st "$gateway/openapi.json" -H "Authorization: Bearer $key" || status=1
if [ "$status" -ne 0 ]; then
    echo "schemathesis: failures above (logs of the servers were in $work, now removed)" >&2
    exit 1
fi
echo "schemathesis: both runs passed" >&2
