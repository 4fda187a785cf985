#!/usr/bin/env python3
"""Does a client that is behind cost the others anything?

Runs the real relay and simulator on loopback, and `tickrelay load` for N
normal WebSocket clients (tick-to-client latency, as `tickrelay load`
reports it). Each case runs twice, in turn:

  alone   the normal clients only;
  stalled the same, plus S stalled clients: WebSocket connections that
          subscribe to `*` and never read a byte. They connect half a second
          into the measured window, so the window holds their whole life up
          to the relay's verdict: the fill (the relay writes to them until
          their socket is full), then the stall (no write attempted), then
          the close (4008) if the write timeout passes within the window.

Same feed, same rate, a fresh relay per run. Prints both p99s and whether
p99(stalled) <= 1.1 x p99(alone) + 2 ms (the isolation target: stalled
clients cost the normal ones at most 10 % + 2 ms at p99), per pair and for
the medians.

Everything is on loopback (multicast via 127.0.0.1, TTL 0) and bounded.

    cargo build --release --workspace --bins
    python3 scripts/bench-isolation.py [--normal 50] [--stalled 300] [--rate 10000]
    python3 scripts/bench-isolation.py --relay-arg=--send-buffer --relay-arg=0   # the kernel's autotuned buffers
"""

import argparse
import base64
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


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


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def masked_text_frame(payload):
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_clients(port, n, rcvbuf):
    """`n` WebSockets on `*` that never read after their handshake. Opened
    together, each step for all at once, so this process costs the machine
    (shared with the relay and the normal clients) as little as it can."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    for s in socks:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n\r\n"
            ).encode()
        )
    subscribe = masked_text_frame(b'{"op":"subscribe","symbols":["*"]}')
    for s in socks:
        # The 101 is all the relay sends before the subscription.
        s.settimeout(10)
        head = s.recv(4096)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        s.sendall(subscribe)
    return socks


def run(args, stalled):
    http = free_port()
    group = f"239.255.{40 + os.getpid() % 50}.{1 + int(time.time()) % 250}:{free_port(socket.SOCK_DGRAM)}"
    relay = subprocess.Popen(
        [os.path.join(BIN, "tickrelay"), "serve", "--http", f"127.0.0.1:{http}",
         "--feed-a", group, "--interface", "127.0.0.1",
         "--write-timeout-ms", str(args.write_timeout_ms),
         "--max-connections-per-ip", "100000"] + args.relay_arg,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{http}"
    sim = None
    socks = []
    try:
        deadline = time.time() + 20
        while get(base + "/healthz")[0] != 200:
            if time.time() > deadline or relay.poll() is not None:
                raise RuntimeError("relay did not start")
            time.sleep(0.05)
        total = args.warmup + args.duration + 10
        sim = subprocess.Popen(
            [os.path.join(BIN, "feed-simulator"), "--group", group, "--interface", "127.0.0.1",
             "--ttl", "0", "--symbols", str(args.symbols), "--rate", str(args.rate),
             "--duration", str(total), "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while get(base + "/readyz")[0] != 200:
            if time.time() > deadline:
                raise RuntimeError("relay not ready (feed?)")
            time.sleep(0.05)
        load = subprocess.Popen(
            [os.path.join(BIN, "tickrelay"), "load", "--url", base, "--transport", "ws",
             "--clients", str(args.normal), "--symbols-per-client", str(args.symbols_per_client),
             "--ramp", "0", "--warmup", str(args.warmup), "--duration", str(args.duration),
             "--server-pid", str(relay.pid), "--json", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if stalled:
            # Half a second into the measured window (the ramp is instant).
            time.sleep(args.warmup + 0.5)
            t0 = time.time()
            socks = stalled_clients(http, stalled, args.rcvbuf)
            connect_s = time.time() - t0
        out, err = load.communicate(timeout=args.warmup + args.duration + 60)
        if load.returncode != 0:
            raise RuntimeError(f"tickrelay load failed: {err}")
        report = json.loads(out)
        m = get(base + "/metrics")[1].decode()
        slow = metric(m, "tickrelay_slow_client_disconnects_total")
        result = {
            "stalled": stalled,
            "p50_ms": report["latency_us"]["p50"] / 1000,
            "p99_ms": report["latency_us"]["p99"] / 1000,
            "p999_ms": report["latency_us"]["p999"] / 1000,
            "quotes": report["quotes"],
            "server_cpu_s": (report.get("server") or {}).get("cpu_s"),
            "slow_disconnects": slow,
            "normal_closes": report["closes"],
        }
        if stalled:
            result["stalled_connect_s"] = round(connect_s, 2)
        return result
    finally:
        for s in socks:
            s.close()
        for p in (sim, relay):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--normal", type=int, default=50, help="normal WebSocket clients")
    ap.add_argument("--symbols-per-client", type=int, default=10)
    ap.add_argument("--stalled", type=int, default=300, help="stalled `*` subscribers")
    ap.add_argument("--symbols", type=int, default=1000, help="symbols in the feed")
    ap.add_argument("--rate", type=int, default=10000, help="feed messages per second")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    ap.add_argument("--write-timeout-ms", type=int, default=10000,
                    help="the relay's write timeout (the default keeps the stalled clients for the whole window)")
    ap.add_argument("--rcvbuf", type=int, default=0,
                    help="SO_RCVBUF of the stalled clients (0: the system's default)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each case")
    ap.add_argument("--relay-arg", action="append", default=[],
                    help="one more relay argument (repeat), e.g. --relay-arg=--send-buffer --relay-arg=0")
    args = ap.parse_args()
    print(f"uptime: {open('/proc/loadavg').read().strip()}", file=sys.stderr)
    pairs = []
    for i in range(args.runs):
        alone = run(args, 0)
        print(json.dumps({"run": i + 1, **alone}), flush=True)
        beside = run(args, args.stalled)
        print(json.dumps({"run": i + 1, **beside}), flush=True)
        pairs.append((alone["p99_ms"], beside["p99_ms"]))
    print(f"uptime: {open('/proc/loadavg').read().strip()}", file=sys.stderr)
    print()
    print(f"{'run':>3} {'p99 alone ms':>13} {'p99 stalled ms':>15} {'bound ms':>9}  within")
    for i, (a, b) in enumerate(pairs):
        bound = 1.1 * a + 2
        print(f"{i + 1:>3} {a:>13.2f} {b:>15.2f} {bound:>9.2f}  {'yes' if b <= bound else 'NO'}")
    a = statistics.median(p[0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    ok = b <= 1.1 * a + 2
    print(f"median p99: alone {a:.2f} ms, beside {args.stalled} stalled {b:.2f} ms; "
          f"bound 1.1 x {a:.2f} + 2 = {1.1 * a + 2:.2f} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
