#!/usr/bin/env python3
"""How long a late joiner takes to be ready, and what the recovery line costs.

For each symbol count, a simulator publishes a market (with its recovery loop
and a retransmission server keeping the whole session); after --warmup
seconds a relay joins, once with the recovery line and once with only the
retransmission server, and we time its /readyz from start to 200. Then two
relays run side by side on a whole feed, one joined to the recovery loop and
one not, and we compare their CPU time.

Everything is on loopback (multicast via 127.0.0.1, TTL 0) and bounded.

    cargo build --release --workspace --bins
    python3 scripts/bench-recovery.py [--symbols 1000,10000] [--rate 10000]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def relay(args):
    port = free_port()
    p = subprocess.Popen(
        [os.path.join(BIN, "tickrelay"), "serve", "--http", f"127.0.0.1:{port}",
         "--interface", "127.0.0.1", "--stale-after-ms", "60000"] + args,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("tickrelay listening on"):
            break
    return p, f"http://127.0.0.1:{port}"


def stop(p):
    p.send_signal(signal.SIGKILL)
    p.wait()


def time_to_ready(base, limit=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        status, _ = get(base + "/readyz", timeout=1)
        if status == 200:
            return time.monotonic() - t0
        time.sleep(0.005)
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", default="1000,10000")
    ap.add_argument("--rate", type=int, default=10000, help="feed messages per second")
    ap.add_argument("--recovery-rate", type=int, default=20000)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--cost-seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    rows = []
    for n, symbols in enumerate(int(s) for s in a.symbols.split(",")):
        group = f"239.255.77.{10 + 3 * n}:{free_port(socket.SOCK_DGRAM)}"
        loop = f"239.255.77.{11 + 3 * n}:{free_port(socket.SOCK_DGRAM)}"
        server = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        duration = a.warmup + 60
        sim = subprocess.Popen(
            [os.path.join(BIN, "feed-simulator"), "--group", group, "--interface", "127.0.0.1",
             "--ttl", "0", "--symbols", str(symbols), "--rate", str(a.rate), "--zipf", "1.0",
             "--recovery", loop, "--recovery-rate", str(a.recovery_rate),
             "--retransmit", server, "--history", str(a.rate * int(duration + 10)),
             "--duration", str(duration), "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(a.warmup)
            row = {"symbols": symbols, "feed_rate": a.rate, "recovery_rate": a.recovery_rate,
                   "joined_after_s": a.warmup}
            for name, args in [("loop", ["--recovery", loop]), ("history", ["--retransmit", server])]:
                p, base = relay(["--feed-a", group] + args)
                took = time_to_ready(base)
                _, m = get(base + "/metrics")
                stop(p)
                row[f"ready_s_{name}"] = round(took, 3)
            # The recovery line's steady cost: two whole relays, one joined
            # to the loop, on the same feed for the same time.
            with_loop, base_w = relay(["--feed-a", group, "--recovery", loop])
            without, base_o = relay(["--feed-a", group, "--retransmit", server])
            time_to_ready(base_w)
            time_to_ready(base_o)
            c0 = (cpu_seconds(with_loop.pid), cpu_seconds(without.pid))
            time.sleep(a.cost_seconds)
            c1 = (cpu_seconds(with_loop.pid), cpu_seconds(without.pid))
            stop(with_loop)
            stop(without)
            row["cpu_pct_with_loop"] = round(100 * (c1[0] - c0[0]) / a.cost_seconds, 1)
            row["cpu_pct_without_loop"] = round(100 * (c1[1] - c0[1]) / a.cost_seconds, 1)
            rows.append(row)
        finally:
            sim.send_signal(signal.SIGKILL)
            sim.wait()

    load = open("/proc/loadavg").read().split()[:3]
    if a.json:
        print(json.dumps({"load": load, "rows": rows}))
        return
    print(f"load average at the end: {' '.join(load)}")
    print("| symbols | feed msg/s | loop msg/s | ready from the loop | ready from history "
          f"(joined {a.warmup:.0f} s in) | relay CPU with loop | without |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['symbols']:,} | {r['feed_rate']:,} | {r['recovery_rate']:,} | "
              f"{r['ready_s_loop']:.2f} s | {r['ready_s_history']:.2f} s | "
              f"{r['cpu_pct_with_loop']}% | {r['cpu_pct_without_loop']}% |")


if __name__ == "__main__":
    sys.exit(main())
