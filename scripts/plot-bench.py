#!/usr/bin/env python3
"""Results table and plots of scripts/bench-e2e.sh.

    python3 scripts/plot-bench.py RESULTS.json [--table OUT.md] [--img DIR]

RESULTS.json is the `all.json` the script writes (a copy is committed as
docs/img/bench-e2e.json, so the plots can be redrawn without rerunning).
Writes a Markdown table, and with --img the PNGs docs/BENCHMARKS.md shows:
bench-latency.png (tick-to-client latency vs offered load), bench-throughput.png
(delivered vs offered quotes/s) and bench-efficiency.png (delivered quotes per
server CPU-second). Needs matplotlib only for --img.
"""

import argparse
import json
import os
import shutil
import sys


def ms(us):
    return f"{us / 1000:.2f}"


def kfmt(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def table(points):
    head = ("| point | system | transport | clients | feed msg/s | offered quotes/s | delivered quotes/s "
            "| frames/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU-s / M quotes "
            "| server CPU | RSS KiB / conn | load CPU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        s = p.get("server") or {}
        l = p["latency_us"]
        idle = p["quotes"] == 0
        secs = max(p["seconds"], 1e-9)
        lines.append("| " + " | ".join([
            p["name"], p["system"], p["transport"], f"{p['connected']:,}",
            kfmt(p["feed_rate"]), "—" if idle else kfmt(p["offered_per_s"]),
            "—" if idle else kfmt(p["quotes_per_s"]),
            "—" if idle else kfmt(p["frames_per_s"]),
            *(["—"] * 5 if idle else [ms(l["p50"]), ms(l["p90"]), ms(l["p99"]), ms(l["p999"]), ms(l["max"])]),
            "—" if idle else f"{s.get('cpu_s_per_million_quotes', 0):.2f}",
            f"{s.get('cpu_s', 0) / secs:.0%}",
            f"{s.get('rss_kib_per_connection', 0):.2f}",
            f"{p['load']['cpu_s'] / secs:.0%}",
        ]) + " |")
    return "\n".join(lines) + "\n"


def series(points, prefix):
    pts = [p for p in points if p["name"].startswith(prefix) and p["quotes"] > 0]
    return sorted(pts, key=lambda p: p["offered_per_s"])


SERIES = [
    ("relay-ws-1k-", "tickrelay, 1,000 WS clients", "tab:blue", "o"),
    ("relay-ws-10k-", "tickrelay, 10,000 WS clients", "tab:green", "s"),
    ("nchan-ws-1k-", "nginx + nchan, 1,000 WS clients", "tab:red", "^"),
    ("node-ws-1k-", "Node.js ws broadcast, 1,000 WS clients", "tab:gray", "d"),
]


def plots(points, img):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(img, exist_ok=True)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for prefix, label, color, marker in SERIES:
        s = series(points, prefix)
        if not s:
            continue
        x = [p["offered_per_s"] for p in s]
        ax.plot(x, [p["latency_us"]["p99"] / 1e3 for p in s], marker=marker, color=color, label=f"{label}: p99")
        ax.plot(x, [p["latency_us"]["p50"] / 1e3 for p in s], marker=marker, color=color, linestyle=":",
                alpha=0.7, label=f"{label}: p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (quote deliveries/s without conflation)")
    ax.set_ylabel("tick-to-client latency (ms)")
    ax.set_title("Latency vs offered load (server on one core)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "bench-latency.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for prefix, label, color, marker in SERIES:
        s = series(points, prefix)
        if not s:
            continue
        ax.plot([p["offered_per_s"] for p in s], [p["quotes_per_s"] for p in s], marker=marker, color=color,
                label=label)
    lo = min((p["offered_per_s"] for p in points if p["quotes"] > 0), default=1)
    hi = max((p["offered_per_s"] for p in points if p["quotes"] > 0), default=10)
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=0.8, label="delivered = offered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (quote deliveries/s without conflation)")
    ax.set_ylabel("delivered quotes/s")
    ax.set_title("Delivered vs offered (conflation caps the difference)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "bench-throughput.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for prefix, label, color, marker in SERIES:
        s = series(points, prefix)
        if not s:
            continue
        y = [p["quotes"] / max(p["server"]["cpu_s"], 1e-9) for p in s]
        ax.plot([p["offered_per_s"] for p in s], y, marker=marker, color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (quote deliveries/s without conflation)")
    ax.set_ylabel("delivered quotes per server CPU-second")
    ax.set_title("Efficiency: deliveries per CPU-second, per server")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(img, "bench-efficiency.png"), dpi=110)
    plt.close(fig)


def summary(points):
    out = []
    by = {p["name"]: p for p in points}
    for prefix, label, *_ in SERIES:
        s = series(points, prefix)
        if not s:
            continue
        best = max(s, key=lambda p: p["quotes_per_s"])
        out.append(f"- {label}: most delivered {best['quotes_per_s']:,.0f} quotes/s "
                   f"(feed {best['feed_rate']:,.0f} msg/s, server CPU "
                   f"{best['server']['cpu_s'] / best['seconds']:.0%})")
        half = min(s, key=lambda p: abs(p["quotes_per_s"] - best["quotes_per_s"] / 2))
        l = half["latency_us"]
        out.append(f"  - nearest half of that: {half['name']}, {half['quotes_per_s']:,.0f} quotes/s, "
                   f"p99 {ms(l['p99'])} ms, p99.9 {ms(l['p999'])} ms")
    for p in points:
        peer = p["name"].split("-", 1)[0]
        if not (p["name"].startswith("nchan-ws-1k-") or p["name"].startswith("node-ws-1k-")):
            continue
        twin = by.get("relay-" + p["name"].split("-", 1)[1])
        if not twin:
            continue
        eff_r = twin["quotes"] / max(twin["server"]["cpu_s"], 1e-9)
        eff_n = p["quotes"] / max(p["server"]["cpu_s"], 1e-9)
        out.append(f"- feed {p['feed_rate']:,.0f} msg/s, 1,000 WS clients: tickrelay {eff_r:,.0f} vs {peer} "
                   f"{eff_n:,.0f} quotes per CPU-second ({eff_r / max(eff_n, 1e-9):.1f}x); p99 "
                   f"{ms(twin['latency_us']['p99'])} vs {ms(p['latency_us']['p99'])} ms, p99.9 "
                   f"{ms(twin['latency_us']['p999'])} vs {ms(p['latency_us']['p999'])} ms")
    for p in points:
        if "-idle-" in p["name"]:
            out.append(f"- {p['name']}: {p['connected']:,} idle connections, server RSS "
                       f"{p['server']['rss_kib_per_connection']:.2f} KiB per connection "
                       f"({p['server']['rss_kib_before']:,} -> {p['server']['rss_kib']:,} KiB)")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--table")
    ap.add_argument("--img")
    a = ap.parse_args()
    data = json.load(open(a.results))
    points = sorted(data["points"], key=lambda p: (p["name"].rsplit("-", 1)[0], p["feed_rate"]))
    text = table(points) + "\n" + summary(points)
    if a.table:
        with open(a.table, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if a.img:
        plots(points, a.img)
        dst = os.path.join(a.img, "bench-e2e.json")
        if os.path.abspath(a.results) != os.path.abspath(dst):
            shutil.copyfile(a.results, dst)


if __name__ == "__main__":
    main()
