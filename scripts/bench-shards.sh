#!/usr/bin/env bash
# Shards share nothing: the same fan-out point with one shard and with two,
# both on ONE core, and the CPU of each of the relay's threads (docs/BENCHMARKS.md,
# "Two cores against one"). On a machine with only two cores the relay cannot
# get two cores of its own while the load generator runs; this measures what
# the scaling depends on instead: whether a second shard costs any CPU per
# frame, and how much of the work is serial (the ingest thread).
#
#   scripts/bench-shards.sh [RATE]        # default 3000 msg/s, ~30 s
#
# Relay pinned to core 0, simulator and load generator on core 1 (as in
# scripts/bench-e2e.sh). Loopback only; multicast TTL 0 on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=bench-shards
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
RATE=${1:-3000}
SECONDS_MEASURED=${DURATION:-5}
for shards in 1 2; do
    start_point "$RATE" --fanout-shards "$shards"
    # The load's window: after its ramp (~0.4 s) and 2 s of warm-up.
    python3 scripts/thread-cpu.py "$SRV" "$SECONDS_MEASURED" --after 3 >"$OUT/threads-$shards.txt" &
    THREADS=$!
    run_load $((SECONDS_MEASURED + 1))
    wait "$THREADS" || true
    stop_all
    python3 - "$OUT/load.json" "$shards" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
frames = r["frames_per_s"] * r["seconds"]
print(f"{sys.argv[2]} shard(s) on one core: {r['quotes_per_s']:,.0f} deliveries/s, "
      f"{r['frames_per_s']:,.0f} frames/s, relay CPU {r['server']['cpu_s'] / r['seconds']:.0%}, "
      f"{r['server']['cpu_s'] / frames * 1e6:.2f} µs/frame, p99 {r['latency_us']['p99'] / 1e3:.1f} ms")
PY
    cat "$OUT/threads-$shards.txt"
done
