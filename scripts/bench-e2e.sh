#!/usr/bin/env bash
# End-to-end benchmark: the real feed-simulator, the real relay and
# `tickrelay load`, on loopback, at set points; with nginx + nchan beside it
# on the same workload. The server under test is pinned to one core
# (SERVER_CPU), the simulator, the nchan bridge and the load generator to the
# other (CLIENT_CPU). Each point runs a fresh server, feed and load, and
# writes one JSON report; at the end scripts/plot-bench.py writes the results
# table and the plots.
#
#   scripts/bench-e2e.sh               # every point (~10 minutes)
#   QUICK=1 scripts/bench-e2e.sh       # a few short points, to try the script
#   ONLY="relay idle" scripts/bench-e2e.sh   # groups: relay big transports nchan node idle fanout
#   ONLY=fanout SERVER_BIN=/path/to/older/tickrelay TAG=before scripts/bench-e2e.sh
#                                     # the fan-out points against another build
#
# Settings (environment): OUT (results, default $CARGO_TARGET_DIR/bench-e2e),
# SERVER_CPU (0), CLIENT_CPU (1), DURATION (10 s), WARMUP (2 s),
# SYMBOLS (1000), ZIPF (1.0), K (symbols per client, 20), PLOT (1: run
# scripts/plot-bench.py and update docs/img), NCHAN (auto|0|1), NODE (auto|0|1:
# the naive Node.js `ws` baseline in scripts/node-baseline, installed with npm
# into the target directory), SERVER_BIN (the relay binary under test,
# default this build's), TAG (prefix of the point names), RATES_FANOUT and
# FANOUT_CLIENTS (the fan-out group: 2,000 WS clients at 750/1,500/3,000
# msg/s, immediate and batch_ms 16, and nchan beside it), SERVER_CPUS (the
# cores the relay may use; default SERVER_CPU), SERVER_EXTRA (more relay flags),
# FANOUT_BATCH (the fan-out group's batch_ms values, default "0 16"; 0 is
# immediate; "0" for a relay without batch_ms), BUILD (1; 0: the caller has
# built the binaries, e.g. under nice).
#
# Everything stays on 127.0.0.0/8; the feed is multicast on 239.255.93.x with
# TTL 0 on the loopback interface. Every process this script starts is
# stopped by it (by pid), also on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
OUT=${OUT:-$TARGET/bench-e2e}
# Absolute: nginx resolves its -c path under its -p prefix.
OUT=$(realpath -m "$OUT")
SERVER_CPU=${SERVER_CPU:-0}
SERVER_CPUS=${SERVER_CPUS:-$SERVER_CPU}
SERVER_BIN=${SERVER_BIN:-$BIN/tickrelay}
TAG=${TAG:-}
RATES_FANOUT=${RATES_FANOUT:-"750 1500 3000"}
FANOUT_CLIENTS=${FANOUT_CLIENTS:-2000}
FANOUT_BATCH=${FANOUT_BATCH:-"0 16"}
BUILD=${BUILD:-1}
CLIENT_CPU=${CLIENT_CPU:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SYMBOLS=${SYMBOLS:-1000}
ZIPF=${ZIPF:-1.0}
K=${K:-20}
QUICK=${QUICK:-0}
PLOT=${PLOT:-1}
ALL_GROUPS="relay big transports nchan node idle fanout"
ONLY=${ONLY:-$ALL_GROUPS}
NCHAN=${NCHAN:-auto}
NODE=${NODE:-auto}

# Feed rates. Offered deliveries/s = rate x fan-out per message: about 310
# for 1,000 clients of 20 Zipf-chosen symbols, 3,100 for 10,000.
RATES_1K=${RATES_1K:-"50 100 200 500 1000 2000 5000 20000"}
RATES_10K=${RATES_10K:-"20 50 100 200 500 2000"}
RATES_NCHAN=${RATES_NCHAN:-"50 100 200 500 1000 2000"}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
if [ "$QUICK" = 1 ]; then
    DURATION=3 WARMUP=1 RATES_1K="200 2000" RATES_10K="200" RATES_NCHAN="200"
    IDLE_CLIENTS=2000
fi

want() { [[ " $ONLY " == *" $1 "* ]]; }
log() { echo "bench-e2e: $*" >&2; }

if [ "$NCHAN" = auto ]; then
    if command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        NCHAN=1
    else
        NCHAN=0
        log "nginx with nchan not installed (apt-get install nginx-light libnginx-mod-nchan): skipping the peer"
    fi
fi

NODE_DIR=$TARGET/node-baseline
if [ "$NODE" != 0 ] && want node; then
    if command -v node >/dev/null && command -v npm >/dev/null; then
        mkdir -p "$NODE_DIR"
        cp scripts/node-baseline/package.json scripts/node-baseline/server.js "$NODE_DIR/"
        if (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund >/dev/null 2>&1); then
            NODE=1
        else
            NODE=0
            log "npm install of the Node baseline failed: skipping it"
        fi
    else
        NODE=0
        log "node or npm not installed: skipping the Node baseline"
    fi
fi

if [ "$BUILD" = 1 ]; then
    log "building (release)"
    cargo build --release --workspace --quiet
    if [ "$NCHAN" = 1 ] || [ "$NODE" = 1 ]; then
        cargo build --release --example nchan-bridge --quiet
    fi
fi

# Many connections: as many descriptors as the hard limit allows (raising
# the hard limit needs CAP_SYS_RESOURCE), ports from a wider range.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
# (Restored on exit: a wider range can hand out ports other programs on this
# host bind on purpose.)
PORT_RANGE_FILE=/proc/sys/net/ipv4/ip_local_port_range
PORT_RANGE_WAS=$(cat "$PORT_RANGE_FILE" 2>/dev/null || true)
if [ -w "$PORT_RANGE_FILE" ]; then
    echo "20000 65000" >"$PORT_RANGE_FILE" 2>/dev/null || true
fi
restore_ports() {
    if [ -n "$PORT_RANGE_WAS" ] && [ -w "$PORT_RANGE_FILE" ]; then
        echo "$PORT_RANGE_WAS" >"$PORT_RANGE_FILE" 2>/dev/null || true
    fi
}
if [ "$IDLE_CLIENTS" -gt $((FD_LIMIT - 200)) ]; then
    log "open-file limit $FD_LIMIT: idle points capped at $((FD_LIMIT - 200)) connections"
    IDLE_CLIENTS=$((FD_LIMIT - 200))
fi

mkdir -p "$OUT/logs"
# A full run starts clean; a subset (ONLY=…) replaces only its own points.
[ "$ONLY" = "$ALL_GROUPS" ] && rm -f "$OUT"/*.json
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "kernel: $(uname -r)"
    echo "open files: $FD_LIMIT"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "server cpu: $SERVER_CPU, client cpu: $CLIENT_CPU"
    command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)"
} >"$OUT/machine.txt"

# track, stop_all, wait_port and free_port: scripts/lib.sh.
trap 'stop_all; restore_ports' EXIT
trap 'exit 130' INT TERM

N=0
# point NAME SERVER RATE [load flags...] — SERVER is relay, nchan or node.
point() {
    local name=$TAG$1 server=$2 rate=$3
    shift 3
    N=$((N + 1))
    local port group="239.255.93.$((N % 250 + 1)):$((43000 + N))"
    port=$(free_port)
    local pids url="http://127.0.0.1:$port" extra=()
    if [ "$server" = relay ]; then
        taskset -c "$SERVER_CPUS" env RUST_LOG=warn "$SERVER_BIN" serve \
            --http "127.0.0.1:$port" --feed-a "$group" --interface 127.0.0.1 \
            --max-connections 200000 --max-connections-per-ip 200000 \
            "${SERVER_ARGS[@]}" >"$OUT/logs/$name.server.log" 2>&1 &
        local srv=$!
        track $srv
        wait_port "$port" || { log "nothing listens on $port"; stop_all; return 0; }
        pids=$srv
    elif [ "$server" = node ]; then
        taskset -c "$SERVER_CPU" node "$NODE_DIR/server.js" "$port" >"$OUT/logs/$name.server.log" 2>&1 &
        local srv=$!
        track $srv
        wait_port "$port" || { log "nothing listens on $port"; stop_all; return 0; }
        pids=$srv
        taskset -c "$CLIENT_CPU" "$BIN/examples/nchan-bridge" --feed-a "$group" \
            --nchan "127.0.0.1:$port" >"$OUT/logs/$name.bridge.log" 2>&1 &
        track $!
        extra=(--directory "sim:$SYMBOLS")
        sleep 0.3
    else
        local dir="$OUT/nchan-$N"
        mkdir -p "$dir"
        sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" scripts/nchan/nginx.conf.in >"$dir/nginx.conf"
        taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -p "$dir" >"$OUT/logs/$name.server.log" 2>&1 &
        local srv=$!
        track $srv
        wait_port "$port" || { log "nothing listens on $port"; stop_all; return 0; }
        local worker
        worker=$(pgrep -P "$srv" | head -1)
        pids="$srv,$worker"
        taskset -c "$CLIENT_CPU" "$BIN/examples/nchan-bridge" --feed-a "$group" \
            --nchan "127.0.0.1:$port" >"$OUT/logs/$name.bridge.log" 2>&1 &
        track $!
        extra=(--directory "sim:$SYMBOLS")
        sleep 0.3
    fi
    taskset -c "$CLIENT_CPU" "$BIN/feed-simulator" --group "$group" --interface 127.0.0.1 \
        --ttl 0 --symbols "$SYMBOLS" --zipf "$ZIPF" --rate "$rate" --duration 900 \
        --session "E$N" --no-progress >"$OUT/logs/$name.sim.log" 2>&1 &
    track $!
    sleep 0.5
    log "$name: $server, feed $rate msg/s, load $*"
    if [ "$server" = relay ]; then
        # The relay's counters over the measured part (after the warm-up):
        # its bursts (fan-out rounds) pace scripts/bench-fanout.sh's floor.
        rm -f "$OUT/logs/$name".[mt][01]
        (sleep "${PWARMUP:-$WARMUP}" && date +%s.%N >"$OUT/logs/$name.t0" &&
            curl -s "$url/metrics" >"$OUT/logs/$name.m0") &
    fi
    if taskset -c "$CLIENT_CPU" "$BIN/tickrelay" load --url "$url" --server-pid "$pids" \
        --json --no-progress --zipf "$ZIPF" --duration "${PDURATION:-$DURATION}" \
        --warmup "${PWARMUP:-$WARMUP}" \
        "${extra[@]}" "$@" >"$OUT/$name.tmp" 2>"$OUT/logs/$name.load.log"; then
        if [ "$server" = relay ]; then
            date +%s.%N >"$OUT/logs/$name.t1"
            curl -s "$url/metrics" >"$OUT/logs/$name.m1" || true
        fi
        python3 - "$OUT/$name.tmp" "$OUT/$name.json" "$name" "$server" "$rate" "$OUT/logs/$name" <<'EOF'
import json, os, sys
sys.path.insert(0, "scripts")
from fanout_metrics import metric
src, dst, name, server, rate, logs = sys.argv[1:]
r = json.load(open(src))
r.update(name=name, system=server, feed_rate=float(rate),
         offered_per_s=float(rate) * r["offered_per_feed_message"])
# The relay's bursts over the measured part: fan-out rounds a second and
# WebSocket frames a round.
if all(os.path.exists(f"{logs}.{k}") for k in ("t0", "t1", "m0", "m1")):
    secs = float(open(f"{logs}.t1").read()) - float(open(f"{logs}.t0").read())
    page = [open(f"{logs}.m{i}").read() for i in (0, 1)]
    def moved(m):
        return metric(page[1], m) - metric(page[0], m)
    rounds = moved("tickrelay_fanout_rounds_total")
    if rounds > 0 and secs > 0:
        r["rounds_per_s"] = rounds / secs
        r["frames_per_round"] = moved('tickrelay_messages_sent_total{transport="ws"}') / rounds
json.dump(r, open(dst, "w"), indent=1)
l = r["latency_us"]
print(f"  {name}: {r['quotes_per_s']:,.0f} quotes/s (offered {r['offered_per_s']:,.0f}), "
      f"p50 {l['p50']/1e3:.2f} ms p99 {l['p99']/1e3:.2f} ms p99.9 {l['p999']/1e3:.2f} ms, "
      f"server {r['server']['cpu_s_per_million_quotes']:.2f} CPU-s/M, "
      f"{r['server']['rss_kib_per_connection']:.2f} KiB/conn, load CPU {r['load']['cpu_s']/r['seconds']:.0%}",
      file=sys.stderr)
EOF
        rm -f "$OUT/$name.tmp"
    else
        log "$name: load failed: $(tail -1 "$OUT/logs/$name.load.log")"
    fi
    stop_all
    sleep 0.5
}

# Extra relay flags for every relay point, e.g. SERVER_EXTRA="--fanout-shards 1".
read -r -a SERVER_ARGS <<<"${SERVER_EXTRA:-}"
if want fanout; then
    for r in $RATES_FANOUT; do
        for b in $FANOUT_BATCH; do
            if [ "$b" = 0 ]; then
                point "relay-ws-2k-$r" relay "$r" --transport ws --clients "$FANOUT_CLIENTS" \
                    --symbols-per-client "$K"
            else
                point "relay-ws-2k-b$b-$r" relay "$r" --transport ws --clients "$FANOUT_CLIENTS" \
                    --symbols-per-client "$K" --batch-ms "$b"
            fi
        done
        if [ "$NCHAN" = 1 ]; then
            point "nchan-ws-2k-$r" nchan "$r" --transport nchan-ws --clients "$FANOUT_CLIENTS" \
                --symbols-per-client "$K"
        fi
    done
fi
if want relay; then
    for r in $RATES_1K; do
        point "relay-ws-1k-$r" relay "$r" --transport ws --clients 1000 --symbols-per-client "$K"
    done
fi
if want big; then
    for r in $RATES_10K; do
        point "relay-ws-10k-$r" relay "$r" --transport ws --clients 10000 \
            --symbols-per-client "$K" --source-ips 4 --ramp 10000
    done
fi
if want transports; then
    for t in ws-msgpack sse poll; do
        point "relay-$t-1k-500" relay 500 --transport $t --clients 1000 --symbols-per-client "$K"
    done
    point relay-snapshot-1k-500 relay 500 --transport snapshot --clients 1000 --symbols-per-client "$K" --poll-interval-ms 1000
fi
if want nchan && [ "$NCHAN" = 1 ]; then
    for r in $RATES_NCHAN; do
        point "nchan-ws-1k-$r" nchan "$r" --transport nchan-ws --clients 1000 --symbols-per-client "$K"
    done
    point nchan-sse-1k-500 nchan 500 --transport nchan-sse --clients 1000 --symbols-per-client "$K"
fi
if want node && [ "$NODE" = 1 ]; then
    for r in $RATES_NCHAN; do
        point "node-ws-1k-$r" node "$r" --transport nchan-ws --clients 1000 --symbols-per-client "$K"
    done
fi
if want idle; then
    # Idle: subscribed to 10 symbols each, no ticks (feed rate 0: directory
    # and heartbeats only); the server's RSS before the ramp and after.
    idle=(--symbols-per-client 10 --idle --source-ips 4 --ramp 5000)
    export PDURATION=2 PWARMUP=3
    point "relay-idle-ws-$IDLE_CLIENTS" relay 0 --transport ws --clients "$IDLE_CLIENTS" "${idle[@]}"
    point "relay-idle-sse-$IDLE_CLIENTS" relay 0 --transport sse --clients "$IDLE_CLIENTS" "${idle[@]}"
    if [ "$NCHAN" = 1 ]; then
        point "nchan-idle-ws-$IDLE_CLIENTS" nchan 0 --transport nchan-ws --clients "$IDLE_CLIENTS" "${idle[@]}"
        point "nchan-idle-sse-$IDLE_CLIENTS" nchan 0 --transport nchan-sse --clients "$IDLE_CLIENTS" "${idle[@]}"
    fi
    if [ "$NODE" = 1 ]; then
        point "node-idle-ws-$IDLE_CLIENTS" node 0 --transport nchan-ws --clients "$IDLE_CLIENTS" "${idle[@]}"
    fi
    unset PDURATION PWARMUP
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "*.json"))) if not f.endswith("all.json")]
json.dump({"machine": open(os.path.join(out, "machine.txt")).read(), "points": rows},
          open(os.path.join(out, "all.json"), "w"), indent=1)
EOF
if [ "$PLOT" = 1 ]; then
    python3 scripts/plot-bench.py "$OUT/all.json" --table "$OUT/results.md" --img docs/img
else
    python3 scripts/plot-bench.py "$OUT/all.json" --table "$OUT/results.md"
fi
cat "$OUT/results.md"
log "reports in $OUT"
