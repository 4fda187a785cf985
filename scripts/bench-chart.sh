#!/usr/bin/env bash
# What a chart costs a delivery: one fan-out point (the relay pinned to core
# 0, the simulator and the load generator on core 1) at the simulator's
# default rate (10,000 quotes and trades/s over 1,000 Zipf symbols), with
# the same 2,000 WebSocket clients each watching one Zipf-drawn symbol —
# once its quotes, once its chart (`tickrelay load --chart`: its 1 s bars
# and its trades, docs/PROTOCOL.md "Trades and bars streamed"). Prints, for
# each: frames/s, deliveries/s (quotes; or trades and bars), the relay's CPU
# per frame and deliveries per relay CPU-second.
#
#   scripts/bench-chart.sh [RATE]   # default 10000 msg/s, ~30 s
#
# Settings by environment: CLIENTS (2000), DURATION (8, seconds measured per
# run). A smoke run:  CLIENTS=20 DURATION=1 scripts/bench-chart.sh 1000
#
# Loopback only; multicast TTL 0 on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=bench-chart
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
RATE=${1:-10000}
CLIENTS=${CLIENTS:-2000}
MEASURED=${DURATION:-8}

export LOAD_CLIENTS=$CLIENTS LOAD_SYMBOLS=1
measure quotes "$RATE" "$MEASURED"
measure chart "$RATE" "$MEASURED" --chart

python3 - "$OUT" "$RATE" "$CLIENTS" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from fanout_metrics import delta
out, rate, clients = sys.argv[1:]
print(f"fan-out point: {rate} msg/s, {clients} WebSocket clients x 1 Zipf symbol, relay on core 0")
print(f"{'watching':<8} {'frames/s':>10} {'deliveries/s':>13} {'relay µs/frame':>15} {'deliveries/CPU-s':>17} {'p99 ms':>7}")
for run in ("quotes", "chart"):
    r = json.load(open(f"{out}/{run}.json"))
    cpu, secs = r["server"]["cpu_s"], r["seconds"]
    frames = r["frames_per_s"] * secs
    deliveries = r["quotes"]
    per_frame = cpu / frames * 1e6 if frames else float("nan")
    per_cpu = deliveries / cpu if cpu else float("nan")
    lat = r["latency_us"]
    p99 = f"{lat['p99'] / 1e3:.1f}" if lat["count"] else "-"
    print(f"{run:<8} {frames / secs:>10,.0f} {deliveries / secs:>13,.0f} {per_frame:>15.2f} {per_cpu:>17,.0f} {p99:>7}")
chart = delta(out, "chart", 'tickrelay_chart_frames_sent_total{transport="ws"}')
print(f"chart frames the relay counted: {chart:,.0f}")
PY
