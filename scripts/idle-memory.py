#!/usr/bin/env python3
"""Resident memory per idle connection of a running relay.

Opens N idle connections of one transport from 127.0.0.x (loopback only),
waits for the relay to settle, and prints the relay's RSS growth per
connection, with the machine's load average beside it (another process's
work can delay the relay's). Run it against a freshly started relay: memory
a process has once used is not given back, so a second run on the same
process reads low.

    tickrelay demo --http 127.0.0.1:18391 --rate 0 --symbols 100 &
    python3 scripts/idle-memory.py --port 18391 --pid $! --transport sse --clients 5000
"""
import argparse
import base64
import json
import os
import resource
import socket
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS for pid %d" % pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the relay's process id")
    ap.add_argument("--transport", choices=["ws", "sse", "poll"], required=True)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--symbol", default="AAPL")
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = f"http://127.0.0.1:{args.port}"
    snap = json.load(urllib.request.urlopen(f"{base}/v1/snapshot?symbols={args.symbol}"))
    since = f"{snap['session']}:{snap['seq']}"
    time.sleep(1)
    before = rss_kib(args.pid)
    socks = []
    for i in range(args.clients):
        s = socket.create_connection(("127.0.0.1", args.port), source_address=(f"127.0.0.{2 + i % 200}", 0))
        if args.transport == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            req = (f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        elif args.transport == "sse":
            req = f"GET /v1/stream?symbols={args.symbol} HTTP/1.1\r\nHost: x\r\n\r\n"
        else:
            req = f"GET /v1/poll?symbols={args.symbol}&since={since}&timeout_ms=120000 HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req.encode())
        socks.append(s)
    time.sleep(3)
    after = rss_kib(args.pid)
    per = (after - before) * 1024 / args.clients
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.transport}: {args.clients} idle connections, relay RSS {before} -> {after} KiB, "
          f"{per:.0f} bytes ({per / 1024:.1f} KiB) per connection (load average {load})")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
