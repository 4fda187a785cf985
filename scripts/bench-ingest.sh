#!/usr/bin/env bash
# shellcheck disable=SC2017  # deadlines in whole seconds: the rounding does not matter
# End-to-end ingest benchmark on one machine, loopback only.
#
#   scripts/bench-ingest.sh [RATE] [COUNT]
#
# 1. Builds the release binaries once.
# 2. Relay on core 0 (taskset -c 0), simulator on core 1, RATE msg/s
#    (default 1,000,000) for COUNT market messages (default 5,000,000); then
#    reads /metrics and reports sent vs applied vs lost vs duplicates.
# 3. The simulator alone on core 1 at 2,000,000 msg/s for 10,000,000
#    messages to a group nobody joined, and its achieved rate.
#
# Optional: CRITERION=1 also runs `cargo bench --bench ingest`.
# Environment: SYMBOLS (default 1000), CARGO_TARGET_DIR (respected).
#
# Network safety: groups 239.255.20.x joined on 127.0.0.1, TTL 0. Every
# process this starts is killed on exit; every wait has a deadline.
set -euo pipefail

RATE=${1:-1000000}
COUNT=${2:-5000000}
SYMBOLS=${SYMBOLS:-1000}
SIM_ALONE_RATE=${SIM_ALONE_RATE:-2000000}
SIM_ALONE_COUNT=${SIM_ALONE_COUNT:-10000000}
FEED=239.255.20.1:33001
IDLE_FEED=239.255.20.2:33002

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release
WORK=$(mktemp -d -t tickrelay-bench.XXXXXX)
# cleanup (scripts/lib.sh): stops the relay, removes $WORK.
trap cleanup EXIT

# Command prefixes pinning to core 0 and core 1 (none on a single core).
# Prefixes, not a shell function: a backgrounded function would run in a
# subshell, and $! would not be the relay's pid.
PIN0=() PIN1=()
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
    PIN0=(taskset -c 0) PIN1=(taskset -c 1)
fi

# metric NAME [LABEL_FILTER]: sum of a metric's series in $WORK/metrics.
metric() {
    awk -v name="$1" -v filt="${2:-}" '
        $1 == name || index($1, name "{") == 1 {
            if (filt == "" || index($1, filt) > 0) s += $2
        }
        END { printf "%.0f\n", s }' "$WORK/metrics"
}

# UDP datagrams the kernel dropped because a receive buffer was full.
rcvbuf_errors() {
    awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp 2>/dev/null || echo 0
}

json_num() { # json_num FILE KEY: a top-level number from the final-state file
    sed -n "s/^  \"$2\": \([0-9.e+-]*\),\{0,1\}$/\1/p" "$1" | head -n1
}

echo "== machine"
echo "cores: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel: $(uname -r)"
echo "net.core.rmem_max: $(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo '?')"

echo "== build (release)"
cargo build --release --quiet -p tickrelay -p feed-simulator

if [[ "${CRITERION:-0}" == 1 ]]; then
    echo "== criterion: cargo bench --bench ingest"
    cargo bench --quiet --bench ingest
fi

echo "== end to end: relay on core 0, simulator on core 1, $RATE msg/s, $COUNT messages, $SYMBOLS symbols"
"${PIN0[@]}" "$BIN/tickrelay" serve --http 127.0.0.1:0 --feed-a "$FEED" --interface 127.0.0.1 \
    --stale-after-ms 600000 --gap-hold-ms 100 >"$WORK/relay.out" 2>"$WORK/relay.err" &
RELAY_PID=$!
track "$RELAY_PID"
PORT=""
for _ in $(seq 200); do
    PORT=$(sed -n 's#^tickrelay listening on http://127.0.0.1:\([0-9]*\)$#\1#p' "$WORK/relay.out")
    [[ -n "$PORT" ]] && break
    kill -0 "$RELAY_PID" 2>/dev/null || { cat "$WORK/relay.err"; exit 1; }
    sleep 0.1
done
[[ -n "$PORT" ]] || { echo "relay did not start"; cat "$WORK/relay.err"; exit 1; }
URL=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -fsS "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

SIM_LIMIT=$(( COUNT / (RATE > 0 ? RATE : 1) * 4 + 60 ))
SESSION=BENCH$$
RCVBUF_ERRORS_BEFORE=$(rcvbuf_errors)
"${PIN1[@]}" timeout "$SIM_LIMIT" "$BIN/feed-simulator" --group "$FEED" --interface 127.0.0.1 --ttl 0 \
    --symbols "$SYMBOLS" --rate "$RATE" --count "$COUNT" --session "${SESSION:0:10}" \
    --no-progress --final-state "$WORK/final.json"

SENT=$(json_num "$WORK/final.json" messages)
SIM_SECONDS=$(json_num "$WORK/final.json" seconds)
SIM_RATE=$(json_num "$WORK/final.json" rate)

# Wait until the relay has accounted for every message, or its counters stop
# moving (30 s at most).
LAST=""
for _ in $(seq 300); do
    curl -fsS "$URL/metrics" >"$WORK/metrics"
    APPLIED=$(metric tickrelay_feed_applied_messages_total)
    LOST=$(metric tickrelay_feed_lost_messages_total)
    NOW="$APPLIED/$LOST"
    (( APPLIED + LOST >= SENT )) && break
    [[ "$NOW" == "$LAST" ]] && break
    LAST=$NOW
    sleep 0.1
done
RECEIVED=$(metric tickrelay_feed_messages_received_total)
PACKETS=$(metric tickrelay_feed_packets_received_total)
DUPS=$(metric tickrelay_feed_duplicate_messages_total)
GAPS=$(metric tickrelay_feed_gaps_opened_total)
ERRORS=$(metric tickrelay_feed_decode_errors_total)
NEVER=$(( SENT - RECEIVED ))
RCVBUF_DROPS=$(( $(rcvbuf_errors) - RCVBUF_ERRORS_BEFORE ))
# utime + stime from /proc, in clock ticks.
RELAY_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$RELAY_PID/stat")

cat <<EOF
sent:        $SENT messages (directory included) in ${SIM_SECONDS}s, simulator rate $(printf '%.0f' "$SIM_RATE") msg/s
received:    $RECEIVED messages in $PACKETS datagrams (never received: $NEVER)
kernel:      $RCVBUF_DROPS datagrams dropped on a full receive buffer (host-wide UDP RcvbufErrors)
applied:     $APPLIED
lost:        $LOST (in $GAPS gaps)
duplicates:  $DUPS
decode errs: $ERRORS
relay cpu:   ${RELAY_CPU}s total (process lifetime)
end to end:  $(awk -v a="$APPLIED" -v s="$SIM_SECONDS" 'BEGIN { printf "%.0f", a / s }') msg/s applied over the simulator's run
EOF
if (( LOST == 0 && APPLIED == SENT )); then
    echo "result:      PASS, 0 messages lost at $RATE msg/s"
else
    echo "result:      LOSS, $(( SENT - APPLIED )) of $SENT messages not applied"
fi

stop_all

echo "== simulator alone on core 1: $SIM_ALONE_RATE msg/s, $SIM_ALONE_COUNT messages, nobody joined"
SIM_LIMIT=$(( SIM_ALONE_COUNT / SIM_ALONE_RATE * 4 + 60 ))
"${PIN1[@]}" timeout "$SIM_LIMIT" "$BIN/feed-simulator" --group "$IDLE_FEED" --interface 127.0.0.1 --ttl 0 \
    --symbols "$SYMBOLS" --rate "$SIM_ALONE_RATE" --count "$SIM_ALONE_COUNT" \
    --no-progress --final-state "$WORK/alone.json"
ALONE=$(json_num "$WORK/alone.json" rate)
echo "simulator:   $(printf '%.0f' "$ALONE") msg/s achieved (target $SIM_ALONE_RATE)"
