#!/bin/sh
# The operator's kit against the tools that read it (a few seconds):
#   - deploy/prometheus: `promtool check rules`, `promtool test rules`, `promtool check config`;
#   - deploy/grafana/scoregate.json: every query parses (`promtool check rules` on a copy);
#   - /metrics of a running gateway (the demo): `promtool check metrics` on the Prometheus text
#     answer, and Prometheus's own OpenMetrics parser (`promtool tsdb create-blocks-from
#     openmetrics`) on the OpenMetrics answer, which must carry the same number of samples;
#   - deploy/systemd: `systemd-analyze verify` (any warning fails) and `systemd-analyze security`.
# promtool comes from Debian's `prometheus` package, systemd-analyze from `systemd`: installed with
# apt-get when missing and run as root; otherwise the check is skipped with a message.
# Usage: scripts/check-deploy.sh [path to a built scoregate binary, default target/debug/scoregate]
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$(cd "$(dirname "${1:-$root/target/debug/scoregate}")" && pwd)/$(basename "${1:-scoregate}")"
[ -x "$binary" ] || { echo "no gateway binary at $binary: cargo build first" >&2; exit 1; }

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing:$missing" >&2
        apt-get update
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        echo "missing:$missing (apt-get install -y$missing as root): skipped" >&2
        exit 0
    fi
fi

work="$(mktemp -d)"
gateway=""
cleanup() {
    [ -z "$gateway" ] || kill "$gateway" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "-- promtool check rules / test rules / check config (deploy/prometheus)"
promtool check rules "$root/deploy/prometheus/scoregate-rules.yml"
promtool test rules "$root/deploy/prometheus/scoregate-rules.test.yml"
promtool check config "$root/deploy/prometheus/prometheus.yml"

echo "-- promtool: every query of deploy/grafana/scoregate.json parses"
# Each panel's `expr` (one a line in the JSON), Grafana's variables given a value, as recording
# rules; tests/api/deploy_kit.rs checks the names they use against a running gateway.
{
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    sed -n 's/^ *"expr": "\(.*\)",\{0,1\}$/\1/p' "$root/deploy/grafana/scoregate.json" |
        sed -e 's/\\"/"/g' -e 's/\$__rate_interval/5m/g' -e 's/\$job/.+/g' -e "s/'/''/g" \
            -e "s/.*/      - record: dashboard:query\n        expr: '&'/"
} >"$work/dashboard-rules.yml"
grep -q "expr: 'max(scoregate_tenants" "$work/dashboard-rules.yml" || {
    cat "$work/dashboard-rules.yml" >&2; echo "no query found in the dashboard" >&2; exit 1; }
queries="$(grep -c '"expr": ' "$root/deploy/grafana/scoregate.json")"
# One record name for all: the duplicate-rule lint does not apply.
promtool check rules --lint=none "$work/dashboard-rules.yml" | tee "$work/dashboard-check.log"
grep -q "SUCCESS: $queries rules found" "$work/dashboard-check.log" || {
    echo "the dashboard has $queries queries: not all were checked" >&2; exit 1; }

echo "-- systemd-analyze verify deploy/systemd/scoregate.service"
# verify refuses an ExecStart whose binary does not exist: check a copy that starts the binary
# just built instead of /usr/local/bin/scoregate (the only difference).
sed "s#/usr/local/bin/scoregate#$binary#" "$root/deploy/systemd/scoregate.service" \
    >"$work/scoregate.service"
systemd-analyze verify "$work/scoregate.service" >"$work/verify.log" 2>&1 || true
if [ -s "$work/verify.log" ]; then
    cat "$work/verify.log" >&2
    echo "systemd-analyze verify: the unit has problems (above)" >&2
    exit 1
fi
# The sandbox must stay tight: "exposure" at most 2.0 of 10 (it is 1.5).
systemd-analyze security --offline=true --threshold=20 "$work/scoregate.service" >"$work/security.log" 2>&1 || {
    cat "$work/security.log" >&2
    exit 1
}
tail -n 1 "$work/security.log"

echo "-- promtool on a running gateway's /metrics (both formats)"
: >"$work/demo.log"   # exists before the background shell opens it
"$binary" demo --bind 127.0.0.1:0 >"$work/demo.log" 2>&1 &
gateway=$!
address=""
for _ in $(seq 1 120); do
    address="$(sed -n 's#.*behind the gateway at \(http://[0-9.:]*\).*#\1#p' "$work/demo.log")"
    [ -n "$address" ] && curl -sf "$address/readyz" >/dev/null 2>&1 && break
    sleep 0.5
done
[ -n "$address" ] || { cat "$work/demo.log" >&2; echo "the demo did not start" >&2; exit 1; }
# A few answers first, so that the per-tenant series and the histograms have samples.
curl -s "$address/scores" >/dev/null
curl -s "$address/tenants/contoso/score" >/dev/null

curl -sf -D "$work/text.headers" -o "$work/metrics.txt" "$address/metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$work/text.headers" || {
    cat "$work/text.headers" >&2; echo "/metrics: not text/plain; version=0.0.4" >&2; exit 1; }
promtool check metrics <"$work/metrics.txt"

curl -sf -D "$work/open.headers" -o "$work/metrics.om" \
    -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' \
    "$address/metrics"
grep -qi '^content-type: application/openmetrics-text' "$work/open.headers" || {
    cat "$work/open.headers" >&2; echo "/metrics: OpenMetrics not negotiated" >&2; exit 1; }
# `promtool check metrics` reads only the Prometheus text format; the OpenMetrics answer goes
# through the parser Prometheus scrapes it with, via backfilling (which wants a timestamp on
# every sample: the same one is added to each).
now="$(date +%s)"
awk -v now="$now" '/^#/ { print; next } { print $0 " " now }' "$work/metrics.om" >"$work/stamped.om"
promtool tsdb create-blocks-from openmetrics "$work/stamped.om" "$work/blocks" >"$work/blocks.log" 2>&1 || {
    cat "$work/blocks.log" >&2; echo "OpenMetrics answer: Prometheus's parser refused it" >&2; exit 1; }
# Every sample line was read (a series is a sample here: one scrape).
samples_sent="$(grep -vc '^#' "$work/metrics.om")"
samples_read="$(awk 'length($1) == 26 && $1 ~ /^[0-9A-Z]+$/ { print $5 }' "$work/blocks.log")"
if [ "$samples_sent" != "$samples_read" ]; then
    cat "$work/blocks.log" >&2
    echo "OpenMetrics answer: $samples_sent samples sent, $samples_read read" >&2
    exit 1
fi
echo "promtool: the Prometheus text answer passes check metrics; the OpenMetrics answer's $samples_read samples parse"
