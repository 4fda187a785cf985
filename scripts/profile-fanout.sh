#!/usr/bin/env bash
# Where the fan-out shard's CPU goes at one point of the fan-out benchmark,
# beside the floor's writer at the same frame size (docs/BENCHMARKS.md,
# "Where a frame's CPU goes").
#
#   scripts/profile-fanout.sh [RATE] [load flags...]     # default 3000 msg/s
#   BATCH_MS=16 scripts/profile-fanout.sh 750
#
# The relay (--fanout-shards 1) is pinned to core 0, the simulator and the
# load generator (2,000 WebSocket clients x 20 Zipf symbols) to core 1, as in
# scripts/bench-e2e.sh; `perf record -g` samples the relay for PERF_SECONDS
# (5) after the ramp, then scripts/profile-split.py buckets the shard
# thread's samples. The floor (benches/floor.rs) is then profiled at the
# mean frame size the load generator saw, its writer thread bucketed the
# same way. Needs `perf` (linux-perf). Takes about a minute. Loopback only;
# the feed is multicast on 239.255.94.x, interface 127.0.0.1, TTL 0; every
# process started here is stopped here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=profile-fanout
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
RATE=${1:-3000}
shift || true
PERF_SECONDS=${PERF_SECONDS:-5}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }

batch=()
[ -n "${BATCH_MS:-}" ] && batch=(--batch-ms "$BATCH_MS")
start_point "$RATE" --fanout-shards 1
# The load measures PERF_SECONDS + 1 s after a 2 s warm-up; perf samples
# inside that window.
(sleep 4; perf record -F 2000 -g -p "$SRV" -o "$OUT/relay.data" -- sleep "$PERF_SECONDS" >/dev/null 2>&1) &
PERF=$!
run_load $((PERF_SECONDS + 1)) "${batch[@]}" "$@"
wait "$PERF" || true
stop_all
read -r US FRAME < <(python3 - "$OUT/load.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
frames = r["frames_per_s"] * r["seconds"]
print(f'{r["server"]["cpu_s"] / frames * 1e6:.2f} {r["bytes_per_s"] / r["frames_per_s"]:.0f}')
EOF
)
echo "relay at $RATE msg/s: $US µs of CPU per frame, $FRAME bytes per frame"
python3 scripts/profile-split.py "$OUT/relay.data" --comm fanout-0 --per-frame-us "$US"

FLOOR=$(floor_exe)
ulimit -n "$(ulimit -Hn)"
FLOOR_BYTES=$FRAME FLOOR_ROUNDS=${FLOOR_ROUNDS:-300} perf record -F 2000 -g -o "$OUT/floor.data" \
    "$FLOOR" --bench >"$OUT/floor.txt" 2>/dev/null
FUS=$(sed -n 's/^floor\/write: .*(\([0-9.]*\) µs\/frame).*/\1/p' "$OUT/floor.txt")
echo "floor at $FRAME bytes: $FUS µs of CPU per frame (its writer thread)"
python3 scripts/profile-split.py "$OUT/floor.data" --writer --per-frame-us "$FUS"
