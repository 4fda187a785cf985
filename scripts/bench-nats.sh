#!/usr/bin/env bash
# shellcheck disable=SC2154  # start() sets bridge_PID, mcast_URL, ... through eval
# The NATS path measured against multicast, in one run, on loopback.
#
#   scripts/bench-nats.sh [RATE] [SECS]
#
# Starts a JetStream nats-server (free port, temporary store), a bridge
# (`tickrelay bridge`, joins the feed, publishes to stream BENCH), relay M
# (multicast only) and relay N (`--feed-a off --nats`, the stream only), then
# the simulator at RATE msg/s (default 20,000) for SECS seconds (default 20).
# Reports:
#   - CPU seconds per million messages of the bridge process, of relay M
#     (the same ingest without publishing) and of nats-server;
#   - p50 / p99 of feed lag (exchange timestamp to ingest) on relay M and on
#     relay N: the difference is the latency the NATS path adds;
#   - the bridge's publish latency (sequenced to acknowledged), p50 / p99.
# Percentiles come from the relays' histograms (buckets doubling from 10 µs),
# interpolated linearly inside a bucket.
#
# Network safety: group 239.255.21.1 joined on 127.0.0.1, TTL 0, NATS on
# 127.0.0.1. Every process this starts is killed on exit; every wait has a
# deadline.
set -euo pipefail

RATE=${1:-20000}
SECS=${2:-20}
SYMBOLS=${SYMBOLS:-1000}
FEED=239.255.21.1:33101

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
WORK=$(mktemp -d -t tickrelay-bench-nats.XXXXXX)
# cleanup (scripts/lib.sh): stops every process started here, removes $WORK.
trap cleanup EXIT

export PATH="$PATH:/usr/sbin"
NATS_SERVER=$(command -v nats-server) || { echo "nats-server not found" >&2; exit 1; }
[[ -n ${NO_BUILD:-} ]] || cargo build --release -q --bin tickrelay -p tickrelay -p feed-simulator

PORT=$(free_port)
mkdir -p "$WORK/js"
"$NATS_SERVER" -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
track "$NATS_PID"
wait_port "$PORT" || true
URL=nats://127.0.0.1:$PORT

# start NAME COMMAND ARGS...: runs tickrelay, waits for its address.
start() {
    local name=$1; shift
    "$BIN/tickrelay" "$@" --http 127.0.0.1:0 --interface 127.0.0.1 --stale-after-ms 60000 \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    track "$!"
    eval "${name}_PID=$!"
    for _ in $(seq 200); do
        if grep -q "listening on" "$WORK/$name.out" 2>/dev/null; then
            eval "${name}_URL=$(sed -n 's/^tickrelay listening on //p' "$WORK/$name.out")"
            return
        fi
        sleep 0.05
    done
    echo "$name did not start" >&2
    cat "$WORK/$name.err" >&2
    exit 1
}

start bridge bridge --feed-a "$FEED" --nats "$URL" --stream BENCH
start mcast serve --feed-a "$FEED"
start natsline serve --feed-a off --nats "$URL" --stream BENCH
sleep 1

cpu() { # utime + stime of a pid, seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}
B0=$(cpu "$bridge_PID"); M0=$(cpu "$mcast_PID"); N0=$(cpu "$natsline_PID"); S0=$(cpu "$NATS_PID")
curl -s "$mcast_URL/metrics" >"$WORK/m0"; curl -s "$natsline_URL/metrics" >"$WORK/n0"
curl -s "$bridge_URL/metrics" >"$WORK/b0"

"$BIN/feed-simulator" --group "$FEED" --interface 127.0.0.1 --ttl 0 --no-progress \
    --symbols "$SYMBOLS" --rate "$RATE" --duration "$SECS" --session BENCHN \
    >"$WORK/sim.out" 2>&1
sleep 2

B1=$(cpu "$bridge_PID"); M1=$(cpu "$mcast_PID"); N1=$(cpu "$natsline_PID"); S1=$(cpu "$NATS_PID")
curl -s "$mcast_URL/metrics" >"$WORK/m1"; curl -s "$natsline_URL/metrics" >"$WORK/n1"
curl -s "$bridge_URL/metrics" >"$WORK/b1"

# value FILE NAME: a sample's value.
value() { awk -v n="$2" '$1 == n { print $2; exit }' "$1"; }
# quantile Q BEFORE AFTER HISTOGRAM: from the bucket deltas.
quantile() {
    python3 - "$@" <<'EOF'
import sys, re
q, before, after, name = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(re.escape(name) + r'_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    return out
b0, b1 = buckets(before), buckets(after)
les = sorted(b1)
counts = [b1[le] - b0.get(le, 0) for le in les]
total = counts[-1] if counts else 0
if total <= 0:
    print("n/a"); sys.exit()
rank, prev_le, prev_c = q * total, 0.0, 0.0
for le, c in zip(les, counts):
    if c >= rank:
        if le == float("inf"):
            print(f">{prev_le*1e3:.2f} ms"); break
        frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
        print(f"{(prev_le + frac * (le - prev_le))*1e3:.3f} ms"); break
    prev_le, prev_c = le, c
EOF
}

MSGS=$(( $(value "$WORK/b1" tickrelay_feed_applied_messages_total) - $(value "$WORK/b0" tickrelay_feed_applied_messages_total) ))
NMSGS=$(( $(value "$WORK/n1" tickrelay_feed_applied_messages_total) - $(value "$WORK/n0" tickrelay_feed_applied_messages_total) ))
per_m() { python3 -c "print(f'{($2 - $1) / max($MSGS, 1) * 1e6:.2f}')"; }

echo "== NATS path: $RATE msg/s x $SECS s, $SYMBOLS symbols =="
sed -n '$p' "$WORK/sim.out"
echo "messages applied: bridge $MSGS, relay N (stream) $NMSGS"
echo "bridge published packets: $(( $(value "$WORK/b1" tickrelay_bridge_published_packets_total) - $(value "$WORK/b0" tickrelay_bridge_published_packets_total) )), errors queue_full $(value "$WORK/b1" 'tickrelay_bridge_publish_errors_total{reason="queue_full"}')"
echo "CPU-s per million messages: bridge $(per_m "$B0" "$B1"), relay M (multicast) $(per_m "$M0" "$M1"), relay N (stream) $(per_m "$N0" "$N1"), nats-server $(per_m "$S0" "$S1")"
echo "feed lag p50: multicast $(quantile 0.5 "$WORK/m0" "$WORK/m1" tickrelay_feed_lag_seconds), stream $(quantile 0.5 "$WORK/n0" "$WORK/n1" tickrelay_feed_lag_seconds)"
echo "feed lag p99: multicast $(quantile 0.99 "$WORK/m0" "$WORK/m1" tickrelay_feed_lag_seconds), stream $(quantile 0.99 "$WORK/n0" "$WORK/n1" tickrelay_feed_lag_seconds)"
echo "bridge publish latency p50 $(quantile 0.5 "$WORK/b0" "$WORK/b1" tickrelay_bridge_publish_latency_seconds), p99 $(quantile 0.99 "$WORK/b0" "$WORK/b1" tickrelay_bridge_publish_latency_seconds)"
echo "uptime: $(uptime)"
