# shellcheck shell=bash
# What the benchmark scripts share; sourced, not run (`. scripts/lib.sh` from
# the repository's root). Every process a script starts is tracked by pid and
# stopped by pid: nothing here looks processes up by name.
#
#   track PID...          # stop_all will stop it
#   stop_all              # TERM every tracked process, KILL any left after 10 s, reap them
#   cleanup               # stop_all, then remove $WORK if it is set (an EXIT trap)
#   wait_port PORT [N]    # until 127.0.0.1:PORT accepts a connection: N tries
#                         # 0.1 s apart (default 100); returns 1 if it never does
#   free_port             # prints a TCP port free on 127.0.0.1
#   floor_exe             # builds benches/floor.rs (niced) and prints its executable

STARTED=()

track() {
    STARTED+=("$@")
}

stop_all() {
    local p alive _
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        alive=0
        for p in "${STARTED[@]}"; do
            if kill -0 "$p" 2>/dev/null; then
                alive=1
                break
            fi
        done
        [ "$alive" = 1 ] || break
        sleep 0.1
    done
    for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
    STARTED=()
}

cleanup() {
    stop_all
    if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}

wait_port() {
    local port=$1 tries=${2:-100} _
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

floor_exe() {
    nice -n 19 cargo bench --bench floor --no-run --quiet --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor" and m.get("executable"):
        print(m["executable"])'
}
