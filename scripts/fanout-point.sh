# shellcheck shell=bash
# Sourced by scripts/profile-fanout.sh and scripts/bench-shards.sh: one
# fan-out point with the relay pinned to core 0 and the simulator and the
# load generator (2,000 WebSocket clients x 20 Zipf symbols) on core 1, as in
# scripts/bench-e2e.sh. Loopback only; the feed is multicast on 239.255.94.x,
# interface 127.0.0.1, TTL 0. Needs ROOT (the working directory) and NAME
# (OUT defaults to $CARGO_TARGET_DIR/NAME); builds the binaries if missing.
#
#   start_point RATE [relay flags...]   # sets SRV (the relay's pid)
#   run_load SECONDS [load flags...]    # 2 s warm-up, then SECONDS measured
#   stop_all                            # stops everything start_point started

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=$(realpath -m "${OUT:-$TARGET/$NAME}")
mkdir -p "$OUT"
[ -x "$BIN/tickrelay" ] || cargo build --release --bins

PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
trap stop_all EXIT

start_point() {
    local rate=$1 port group
    shift
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    group="239.255.94.$((RANDOM % 200 + 20)):$((44000 + RANDOM % 1000))"
    taskset -c 0 env RUST_LOG=warn "$BIN/tickrelay" serve --http "127.0.0.1:$port" --feed-a "$group" \
        --interface 127.0.0.1 --max-connections 200000 --max-connections-per-ip 200000 \
        "$@" >"$OUT/server.log" 2>&1 &
    SRV=$!
    PIDS+=("$SRV")
    URL="http://127.0.0.1:$port"
    for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 "$BIN/feed-simulator" --group "$group" --interface 127.0.0.1 --ttl 0 --symbols 1000 \
        --zipf 1.0 --rate "$rate" --duration 120 --session FANPT --no-progress >"$OUT/sim.log" 2>&1 &
    PIDS+=("$!")
    sleep 0.5
}

run_load() {
    local seconds=$1
    shift
    taskset -c 1 "$BIN/tickrelay" load --url "$URL" --server-pid "$SRV" --json --no-progress \
        --zipf 1.0 --duration "$seconds" --warmup 2 --transport ws --clients 2000 \
        --symbols-per-client 20 "$@" >"$OUT/load.json" 2>"$OUT/load.log"
}
