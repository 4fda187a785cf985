# shellcheck shell=bash
# Sourced by the fan-out bench scripts (scripts/README.md): one
# fan-out point with the relay pinned to core 0 and the simulator and the
# load generator (2,000 WebSocket clients x 20 Zipf symbols) on core 1, as in
# scripts/bench-e2e.sh. Loopback only; the feed is multicast on 239.255.94.x,
# interface 127.0.0.1, TTL 0. Needs ROOT (the working directory) and NAME
# (OUT defaults to $CARGO_TARGET_DIR/NAME); builds the binaries if missing.
#
#   start_point RATE [relay flags...]   # sets SRV (the relay's pid)
#   run_load SECONDS [load flags...]    # 2 s warm-up, then SECONDS measured;
#                                       # LOAD_CLIENTS (2000) clients x
#                                       # LOAD_SYMBOLS (20) symbols each
#   measure NAME RATE SECONDS [load flags...]
#                                       # a fresh point, one run_load, the
#                                       # relay's /metrics before and after:
#                                       # $OUT/NAME.{json,log,before,after}
#                                       # (read with scripts/fanout_metrics.py)
#   stop_all                            # stops everything start_point started
#                                       # (scripts/lib.sh; also on exit)

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=$(realpath -m "${OUT:-$TARGET/$NAME}")
mkdir -p "$OUT"
[ -x "$BIN/tickrelay" ] || cargo build --release --bins

trap stop_all EXIT

start_point() {
    local rate=$1 port group
    shift
    port=$(free_port)
    group="239.255.94.$((RANDOM % 200 + 20)):$((44000 + RANDOM % 1000))"
    taskset -c 0 env RUST_LOG=warn "$BIN/tickrelay" serve --http "127.0.0.1:$port" --feed-a "$group" \
        --interface 127.0.0.1 --max-connections 200000 --max-connections-per-ip 200000 \
        "$@" >"$OUT/server.log" 2>&1 &
    SRV=$!
    track "$SRV"
    URL="http://127.0.0.1:$port"
    wait_port "$port" 50 || true
    taskset -c 1 "$BIN/feed-simulator" --group "$group" --interface 127.0.0.1 --ttl 0 --symbols 1000 \
        --zipf 1.0 --rate "$rate" --duration 120 --session FANPT --no-progress >"$OUT/sim.log" 2>&1 &
    track "$!"
    sleep 0.5
}

run_load() {
    local seconds=$1
    shift
    taskset -c 1 "$BIN/tickrelay" load --url "$URL" --server-pid "$SRV" --json --no-progress \
        --zipf 1.0 --duration "$seconds" --warmup 2 --transport ws --clients "${LOAD_CLIENTS:-2000}" \
        --symbols-per-client "${LOAD_SYMBOLS:-20}" "$@" >"$OUT/load.json" 2>"$OUT/load.log"
}

measure() {
    local name=$1 rate=$2 seconds=$3
    shift 3
    start_point "$rate"
    curl -s "$URL/metrics" >"$OUT/$name.before"
    run_load "$seconds" "$@"
    curl -s "$URL/metrics" >"$OUT/$name.after"
    mv "$OUT/load.json" "$OUT/$name.json"
    mv "$OUT/load.log" "$OUT/$name.log"
    stop_all
}
