#!/usr/bin/env bash
# What depth of book costs a delivery: one fan-out point (the relay pinned to
# core 0, the simulator and the load generator on core 1; the simulator's
# default books, --book-depth 10) measured twice with the same clients and
# the same Zipf symbols — once watching the quotes of 5 symbols each, once
# the books of the same 5 at depth 10 (`tickrelay load --books 5 --depth 10
# --books-only`). Prints, for each: frames/s, the relay's CPU per frame,
# deliveries per relay CPU-second, and the share of changes conflation
# merged (tickrelay_quotes_conflated_total against the frames sent: one
# mark per changed locate, so it counts merged book changes too).
#
#   scripts/bench-book.sh [RATE]   # default 3000 msg/s, ~40 s
#
# Settings by environment: CLIENTS (2000), BOOKS (5, also the symbols per
# client), DEPTH (10), DURATION (8, seconds measured per run). A smoke run:
#   CLIENTS=20 DURATION=1 scripts/bench-book.sh 500
#
# Loopback only; multicast TTL 0 on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=bench-book
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
RATE=${1:-3000}
CLIENTS=${CLIENTS:-2000}
BOOKS=${BOOKS:-5}
DEPTH=${DEPTH:-10}
MEASURED=${DURATION:-8}

export LOAD_CLIENTS=$CLIENTS LOAD_SYMBOLS="$BOOKS"
measure quotes "$RATE" "$MEASURED"
measure books "$RATE" "$MEASURED" --books "$BOOKS" --depth "$DEPTH" --books-only

python3 - "$OUT" "$RATE" "$CLIENTS" "$BOOKS" "$DEPTH" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from fanout_metrics import delta
out, rate, clients, books, depth = sys.argv[1:]
print(f"fan-out point: {rate} msg/s (simulator books at depth 10), {clients} WebSocket clients x {books} Zipf symbols, relay on core 0")
print(f"{'watching':<10} {'frames/s':>10} {'deliveries/s':>13} {'relay µs/frame':>15} {'deliveries/CPU-s':>17} {'conflated':>10} {'p99 ms':>7}")
for run in ("quotes", "books"):
    r = json.load(open(f"{out}/{run}.json"))
    cpu = r["server"]["cpu_s"]
    if run == "quotes":
        frames = r["frames_per_s"] * r["seconds"]
        deliveries = r["quotes"]
        sent = delta(out, run, 'tickrelay_messages_sent_total{transport="ws"}')
    else:
        frames = r["book_frames"]
        deliveries = r["book_frames"]
        sent = delta(out, run, 'tickrelay_book_frames_sent_total{transport="ws"}')
    merged = delta(out, run, "tickrelay_quotes_conflated_total")
    share = merged / (merged + sent) if merged + sent else 0.0
    per_frame = cpu / frames * 1e6 if frames else float("nan")
    per_cpu = deliveries / cpu if cpu else float("nan")
    label = run if run == "quotes" else f"books/{depth}"
    # Book frames carry no exchange timestamp: no tick-to-client latency.
    lat = r["latency_us"]
    p99 = f"{lat['p99'] / 1e3:.1f}" if lat["count"] else "-"
    print(f"{label:<10} {frames / r['seconds']:>10,.0f} {deliveries / r['seconds']:>13,.0f} {per_frame:>15.2f} "
          f"{per_cpu:>17,.0f} {share:>9.1%} {p99:>7}")
PY
