#!/usr/bin/env bash
# The fan-out benchmark in one run: the floor, the fan-out points of this
# build (after) and of the relay as it was before the fan-out work (before:
# one task per client, no shards, no batch_ms; BASE_COMMIT below) with nchan
# beside them, the half-max points, idle memory per connection, then one
# Markdown results file with a computed targets table
# (scripts/fanout-table.py) and, with PLOT=1, the plots in docs/img
# (scripts/fanout-plot.py). docs/BENCHMARKS.md reads its results.
#
#   scripts/bench-fanout.sh              # everything: ~5 minutes on 2 cores, plus ~6
#                                        # the first time (the before build, niced)
#   QUICK=1 scripts/bench-fanout.sh      # 1-second points, 2 rates, no before: ~2 minutes
#   BEFORE=0 PLOT=1 scripts/bench-fanout.sh
#
# Settings (environment): OUT (results, default $CARGO_TARGET_DIR/bench-fanout),
# DURATION (5 s per point), WARMUP (2 s), RATES (feed msg/s, "750 1500 3000"),
# HALF_RATES (about half the relay's max, "250 375"), BEFORE (1: build or
# reuse the version to compare against in $CARGO_TARGET_DIR/baseline-target
# and measure it; 0: skip), BEFORE_BIN (an existing build of the version to
# compare against, used instead),
# NCHAN (auto|0|1), FLOOR_ROUNDS (300), FLOOR_SIZES ("300 1400"; the mean
# frame size of the after points is measured too), IDLE_CLIENTS (5000),
# PLOT (0; 1: write the plots fanout-*.png into IMG, default docs/img; needs
# matplotlib: pip install --user matplotlib).
#
# Builds run under `nice -n 19`; the measurements do not. The relay is pinned
# to core 0 (`--fanout-shards 1`), the simulator and the load generator to
# core 1 (scripts/bench-e2e.sh). Everything stays on 127.0.0.0/8; the feeds
# are multicast with TTL 0 on the loopback interface. Every process this
# script starts stops by itself or is stopped by it (by pid), also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET=$(realpath -m "$TARGET")
export CARGO_TARGET_DIR=$TARGET
BIN=$TARGET/release
OUT=$(realpath -m "${OUT:-$TARGET/bench-fanout}")
# The version to compare against: the relay before the fan-out work.
BASE_COMMIT=16019ac
BASE_SRC=$TARGET/baseline-src
BASE_BIN=${BEFORE_BIN:-$TARGET/baseline-target/release/tickrelay}
QUICK=${QUICK:-0}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
RATES=${RATES:-"750 1500 3000"}
HALF_RATES=${HALF_RATES:-"250 375"}
BEFORE=${BEFORE:-1}
NCHAN=${NCHAN:-auto}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-300}
FLOOR_SIZES=${FLOOR_SIZES:-"300 1400"}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
PLOT=${PLOT:-0}
IMG=${IMG:-docs/img}
if [ "$QUICK" = 1 ]; then
    DURATION=1 WARMUP=1 RATES="750 3000" HALF_RATES=375 BEFORE=0
    FLOOR_ROUNDS=100 IDLE_CLIENTS=1000
fi

log() { echo "bench-fanout: $*" >&2; }
utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# part NAME begin|end: the time and the load average, for the results file.
part() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(utc)" "$(loadavg)" >>"$OUT/parts.tsv"; }

# The floor's 2,000 socket pairs and the idle relays' 5,000 connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*.json "$OUT"/*.txt "$OUT"/parts.tsv "$OUT"/results.md "$OUT"/logs "$OUT"/nchan-*
mkdir -p "$OUT/logs"
{
    echo "date: $(utc)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock || echo ' (with uncommitted changes)')"
    echo "before: $BASE_COMMIT"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
    echo "kernel: $(uname -r)"
    echo "duration: $DURATION s, warmup: $WARMUP s, rates: $RATES, half rates: $HALF_RATES"
    echo "quick: $QUICK"
} >"$OUT/run.txt"
START_S=$SECONDS

# track, stop_all, wait_port and free_port: scripts/lib.sh.
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- builds, niced: this build, the floor bench, the version before ------
part build begin
log "building (release, nice -n 19)"
nice -n 19 cargo build --release --workspace --quiet
nice -n 19 cargo build --release --example nchan-bridge --quiet
FLOOR_EXE=$(floor_exe)
if [ "$BEFORE" = 1 ]; then
    if [ -x "$BASE_BIN" ]; then
        log "before: reusing $BASE_BIN"
    else
        log "before: building $BASE_COMMIT into $TARGET/baseline-target (minutes)"
        mkdir -p "$BASE_SRC"
        git archive "$BASE_COMMIT" | tar -x -C "$BASE_SRC"
        (cd "$BASE_SRC" && CARGO_TARGET_DIR=$TARGET/baseline-target \
            nice -n 19 cargo build --release --bin tickrelay --quiet)
    fi
fi
part build end

# --- the floor: one bare write per frame (benches/floor.rs), unpinned ------
# floor BYTES: its two lines (write, writev) into floor-BYTES.txt.
floor() {
    log "floor: $1-byte frames, $FLOOR_ROUNDS rounds"
    FLOOR_BYTES=$1 FLOOR_ROUNDS=$FLOOR_ROUNDS timeout 300 "$FLOOR_EXE" --bench \
        >"$OUT/floor-$1.txt" 2>"$OUT/logs/floor-$1.log"
    grep '^floor/' "$OUT/floor-$1.txt" >&2
}
part floor begin
for b in $FLOOR_SIZES; do floor "$b"; done
part floor end

# --- the fan-out points -------------------------------------------------------
e2e() {
    OUT=$OUT ONLY=fanout PLOT=0 BUILD=0 DURATION=$DURATION WARMUP=$WARMUP NCHAN=$NCHAN \
        scripts/bench-e2e.sh >"$OUT/logs/e2e-$1.log"
    cp "$OUT/machine.txt" "$OUT/machine-$1.txt"
}
part fanout-after begin
RATES_FANOUT=$RATES SERVER_EXTRA="--fanout-shards 1" e2e after
part fanout-after end

part fanout-half begin
RATES_FANOUT=$HALF_RATES NCHAN=0 SERVER_EXTRA="--fanout-shards 1" e2e half
part fanout-half end

if [ "$BEFORE" = 1 ]; then
    # The version before has neither `--fanout-shards` nor `batch_ms`.
    part fanout-before begin
    RATES_FANOUT=$RATES NCHAN=0 TAG=before- SERVER_BIN=$BASE_BIN FANOUT_BATCH=0 \
        SERVER_EXTRA="" e2e before
    part fanout-before end
fi

# The floor at the mean frame size of this build's points, if it differs.
MEAN=$(python3 - "$OUT" <<'EOF'
import glob, json, os, sys
frames = payload = 0
for f in glob.glob(os.path.join(sys.argv[1], "relay-ws-2k-*.json")):
    r = json.load(open(f))
    frames += r["frames"]
    payload += r["bytes"]
print(round(payload / frames / 10) * 10 if frames else 0)
EOF
)
if [ "$MEAN" -ge 4 ] && [[ " $FLOOR_SIZES " != *" $MEAN "* ]]; then
    part floor-mean begin
    floor "$MEAN"
    part floor-mean end
fi

# --- the paced floor: each point's own bursts ---------------------------------
# For every point of this build, the floor written the way the relay wrote
# it: its frames a round in bursts, its rounds a second, its mean frame size
# (benches/floor.rs with FLOOR_PACE_HZ; the counters from bench-e2e.sh).
part floor-paced begin
for f in "$OUT"/relay-ws-2k-*.json; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .json)
    read -r hz burst bytes < <(python3 - "$f" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if "rounds_per_s" in r and r["frames"]:
    print(f"{r['rounds_per_s']:.1f} {max(1, round(r['frames_per_round']))} {max(4, round(r['bytes'] / r['frames']))}")
else:
    print("0 0 0")
EOF
)
    [ "$hz" != 0 ] || { log "paced floor $name: no bursts measured"; continue; }
    log "paced floor $name: $hz bursts/s of $burst $bytes-byte frames"
    FLOOR_WRITER_CPU=0 FLOOR_READER_CPU=1 FLOOR_BYTES=$bytes FLOOR_ROUNDS=$FLOOR_ROUNDS FLOOR_PACE_HZ=$hz FLOOR_BURST=$burst \
        timeout 300 "$FLOOR_EXE" --bench >"$OUT/floor-paced-$name.txt" 2>"$OUT/logs/floor-paced-$name.log"
    grep '^floor/' "$OUT/floor-paced-$name.txt" >&2
done
part floor-paced end

# --- idle memory per connection: a fresh `tickrelay demo` per measurement ----
N=0
idle() {
    local build=$1 bin=$2 transport=$3 port
    N=$((N + 1))
    port=$(free_port)
    RUST_LOG=warn "$bin" demo --http "127.0.0.1:$port" --rate 0 --symbols 100 \
        --feed-a "239.255.94.$N:$((44100 + N))" --interface 127.0.0.1 \
        >"$OUT/logs/idle-$build-$transport.server.log" 2>&1 &
    local pid=$!
    track "$pid"
    if wait_port "$port"; then
        timeout 300 python3 scripts/idle-memory.py --port "$port" --pid "$pid" \
            --transport "$transport" --clients "$IDLE_CLIENTS" \
            >"$OUT/idle-$build-$transport.txt" 2>"$OUT/logs/idle-$build-$transport.log" ||
            log "idle $build $transport failed: $(tail -1 "$OUT/logs/idle-$build-$transport.log")"
        log "idle $build: $(cat "$OUT/idle-$build-$transport.txt" 2>/dev/null)"
    else
        log "idle $build $transport: the demo did not listen on $port"
    fi
    stop_all
}
part idle begin
for t in ws sse; do
    idle after "$BIN/tickrelay" "$t"
    if [ "$BEFORE" = 1 ]; then idle before "$BASE_BIN" "$t"; fi
done
part idle end

echo "seconds: $((SECONDS - START_S))" >>"$OUT/run.txt"
python3 scripts/fanout-table.py "$OUT" --report "$OUT/results.md"
if [ "$PLOT" = 1 ]; then
    python3 scripts/fanout-plot.py "$OUT/fanout.json" --img "$IMG"
fi
cat "$OUT/results.md"
log "done in $((SECONDS - START_S)) s; results in $OUT/results.md, data in $OUT/fanout.json"
