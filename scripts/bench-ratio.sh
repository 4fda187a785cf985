#!/usr/bin/env bash
# CPU per frame against the paced floor, each fan-out point followed at once
# by its own floor. scripts/bench-fanout.sh measures every point, then every
# floor minutes later; on a machine whose speed drifts (a VM beside others)
# a ratio then carries the drift as well as the relay. Here each point is
# one fan-out point (scripts/fanout-point.sh: the relay on core 0 with one
# shard, the simulator and `tickrelay load` on core 1), then benches/floor.rs
# paced in that point's own bursts (fan-out rounds a second, frames a round,
# mean frame size, from the relay's counters over the measured window) to as
# many sockets as there were clients, its writer on core 0 and its reader
# on core 1 like the relay and its clients; REPEAT rounds over RATES, and
# per rate the median ratio.
#
#   scripts/bench-ratio.sh                               # 750 and 1,500 msg/s, 3 rounds
#   CLIENTS=500 LOAD_EXTRA="--batch-ms 16" scripts/bench-ratio.sh   # below saturation
#
# Settings (environment): RATES (feed msg/s, "750 1500"), REPEAT (3),
# DURATION (6 s measured per point, after 2 s of warm-up), CLIENTS (2000),
# LOAD_EXTRA (more `tickrelay load` flags), RELAY_EXTRA (more relay flags),
# FLOOR_ROUNDS (300: the floor writes ROUNDS x CLIENTS frames), OUT (results,
# default $CARGO_TARGET_DIR/bench-ratio). Loopback only; every process it
# starts is stopped by pid (scripts/lib.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
NAME=bench-ratio
RATES=${RATES:-"750 1500"}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-6}
CLIENTS=${CLIENTS:-2000}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-300}
export LOAD_CLIENTS=$CLIENTS
# shellcheck source=scripts/fanout-point.sh
. scripts/fanout-point.sh
read -r -a load_extra <<<"${LOAD_EXTRA:-}"
read -r -a relay_extra <<<"${RELAY_EXTRA:-}"

FLOOR=$(floor_exe)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
rm -f "$OUT"/point-*.json "$OUT"/floor-*.txt "$OUT"/*.prom
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with uncommitted changes)')"
    echo "rates: $RATES, repeat: $REPEAT, duration: $DURATION s, clients: $CLIENTS, load: ${LOAD_EXTRA:-}, relay: ${RELAY_EXTRA:-}"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/run.txt"

for round in $(seq "$REPEAT"); do
    for rate in $RATES; do
        name=$rate-$round
        start_point "$rate" --fanout-shards 1 "${relay_extra[@]}"
        # The relay's counters at the edges of the measured window.
        (
            sleep 2
            curl -s "$URL/metrics" >"$OUT/$name.before.prom"
            sleep "$DURATION"
            curl -s "$URL/metrics" >"$OUT/$name.after.prom"
        ) &
        scrape=$!
        run_load "$DURATION" "${load_extra[@]}"
        wait "$scrape"
        stop_all
        mv "$OUT/load.json" "$OUT/point-$name.json"
        read -r hz burst bytes < <(python3 - "$OUT" "$name" "$DURATION" <<'EOF'
import json, sys
sys.path.insert(0, "scripts")
from fanout_metrics import metric
out, name, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
moved = lambda m: metric(open(f"{out}/{name}.after.prom").read(), m) - metric(open(f"{out}/{name}.before.prom").read(), m)
rounds = moved("tickrelay_fanout_rounds_total")
sent = moved('tickrelay_messages_sent_total{transport="ws"}')
r = json.load(open(f"{out}/point-{name}.json"))
print(f"{rounds / secs:.1f} {max(1, round(sent / max(rounds, 1)))} {max(4, round(r['bytes'] / max(r['frames'], 1)))}")
EOF
        )
        FLOOR_WRITER_CPU=0 FLOOR_READER_CPU=1 FLOOR_SOCKETS=$CLIENTS FLOOR_BYTES=$bytes FLOOR_ROUNDS=$FLOOR_ROUNDS FLOOR_PACE_HZ=$hz \
            FLOOR_BURST=$burst timeout 300 "$FLOOR" --bench >"$OUT/floor-$name.txt" 2>/dev/null
        echo "bench-ratio: $name: $hz bursts/s of $burst $bytes-byte frames" >&2
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/run.txt"

python3 - "$OUT" "$RATES" "$REPEAT" <<'EOF' | tee "$OUT/results.md"
import json, re, statistics, sys
out, rates, repeat = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
print(open(f"{out}/run.txt").read().rstrip())
print()
print("| msg/s | round | quotes a frame | frames/s | relay CPU | relay µs/frame | bursts/s × frames | paced floor µs/frame | ratio |")
print("|---|---|---:|---:|---:|---:|---|---:|---:|")
medians = {}
for rate in rates:
    ratios = []
    for i in range(1, repeat + 1):
        r = json.load(open(f"{out}/point-{rate}-{i}.json"))
        floor = open(f"{out}/floor-{rate}-{i}.txt").read()
        fus = float(re.search(r"floor/paced: .*\(([0-9.]+) µs/frame\)", floor).group(1))
        pace = re.search(r"floor/paced: ([0-9.]+) bursts/s of (\d+) frames", floor)
        frames = r["frames_per_s"] * r["seconds"]
        us = r["server"]["cpu_s"] / frames * 1e6
        cpu = r["server"]["cpu_s"] / r["seconds"] * 100
        ratios.append(us / fus)
        print(f"| {rate} | {i} | {r['quotes'] / r['frames']:.1f} | {r['frames_per_s']:,.0f} | {cpu:.0f}% "
              f"| {us:.2f} | {float(pace.group(1)):,.0f} × {pace.group(2)} | {fus:.2f} | {us / fus:.2f} |")
    medians[rate] = statistics.median(ratios)
print()
print("median ratio: " + ", ".join(f"{rate} msg/s {m:.2f}×" for rate, m in medians.items()))
EOF
