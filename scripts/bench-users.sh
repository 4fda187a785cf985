#!/usr/bin/env bash
# What users cost a delivery: one fan-out point (2,000 WebSocket clients x 20
# Zipf symbols) three times in one run — the shared token (no users), users'
# JSON Web Tokens in real time (entitlement compiled per token, usage counted
# per user into SQLite), and the same users 1 s delayed (served from the
# delayed view) — and the relay's CPU per delivered quote of each, as ratios
# to the first. Then the delayed view's memory: its states held per symbol,
# measured after the delayed run and extrapolated to the default 15-minute
# view (docs/BENCHMARKS.md, "Users").
#
#   scripts/bench-users.sh [RATE]        # default 3000 msg/s, ~1 min
#
# Relay pinned to core 0, simulator and load generator on core 1. Loopback
# only; multicast TTL 0 on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=bench-users
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
RATE=${1:-3000}
SECONDS_MEASURED=${DURATION:-8}
SECRET="$OUT/secret"
head -c 48 /dev/urandom | base64 >"$SECRET"
SHARED=bench-shared-token-0123456789
mint() { "$BIN/tickrelay" token --secret-file "$SECRET" --sub bench --symbols '*' --ttl 1h "$@"; }
REALTIME=$(mint --class pro)
DELAYED=$(mint --class nonpro --delay 1s)

run() {
    local name=$1 token=$2
    shift 2
    start_point "$RATE" "$@"
    run_load "$SECONDS_MEASURED" --token "$token"
    cp "$OUT/load.json" "$OUT/$name.json"
    curl -s "$URL/metrics" >"$OUT/$name.metrics"
    stop_all
}

run shared "$SHARED" --token "$SHARED"
run realtime "$REALTIME" --jwt-secret-file "$SECRET" --usage-db "$OUT/usage-rt.db"
rm -f "$OUT"/usage-*.db*
run delayed "$DELAYED" --jwt-secret-file "$SECRET" --usage-db "$OUT/usage-d.db"
rm -f "$OUT"/usage-*.db*

python3 - "$OUT" "$RATE" <<'PY'
import json, sys, re
out, rate = sys.argv[1], sys.argv[2]
def load(name):
    r = json.load(open(f"{out}/{name}.json"))
    q = r["quotes_per_s"] * r["seconds"]
    return r, r["server"]["cpu_s"] / q * 1e6
rows = [(n, *load(n)) for n in ("shared", "realtime", "delayed")]
base = rows[0][2]
print(f"fan-out point: {rate} msg/s, 2,000 WebSocket clients x 20 Zipf symbols, relay on core 0")
print(f"{'tokens':<10} {'deliveries/s':>13} {'relay µs/delivery':>18} {'ratio':>6} {'p99 ms':>7}")
for name, r, us in rows:
    print(f"{name:<10} {r['quotes_per_s']:>13,.0f} {us:>18.3f} {us / base:>6.2f} {r['latency_us']['p99'] / 1e3:>7.1f}")
m = open(f"{out}/delayed.metrics").read()
def metric(name):
    v = re.search(rf"^{name} (\S+)$", m, re.M)
    return float(v.group(1)) if v else 0.0
samples, size = metric("tickrelay_delayed_view_samples"), metric("tickrelay_delayed_view_sample_bytes")
secs = json.load(open(f"{out}/delayed.json"))["seconds"] + 2.5
per_symbol_s = samples / 1000 / secs
print(f"delayed view after ~{secs:.0f} s of feed: {samples:,.0f} states of {size:.0f} B over 1,000 symbols "
      f"= {samples * size / 1000:,.0f} B per symbol ({per_symbol_s:.2f} states per symbol-second)")
print(f"at the default 15-minute view and 1 s steps: at most 901 states per symbol = {901 * size / 1024:,.1f} KiB "
      f"for a symbol that changes every second; at this feed's mix {min(per_symbol_s, 1) * 900 * size / 1024:,.1f} KiB per symbol on average")
PY
