#!/usr/bin/env python3
"""The fan-out plots of docs/BENCHMARKS.md from one run of scripts/bench-fanout.sh.

    python3 scripts/fanout-plot.py OUT/fanout.json [--img docs/img]

Reads the fanout.json scripts/fanout-table.py --report writes (the same data
as the results tables) and writes, per feed rate, bars for before, after
(immediate and batch_ms 16) and nchan:

    fanout-cpu-per-frame.png   relay CPU µs per frame, the run's floors as lines
    fanout-deliveries-per-cpu.png   deliveries per CPU-second, × nchan on the bars
    fanout-p99.png             p99 latency, the 2 ms and 20 ms targets as lines
    fanout-idle.png            bytes per idle connection, the 2 KiB target as a line

A copy of the JSON goes beside them (fanout.json), so they can be redrawn.
Needs matplotlib (pip install --user matplotlib).
"""
import argparse
import json
import os
import shutil

# (build, batch_ms, label, colour): one bar per series and feed rate.
SERIES = [
    ("before", 0, "before (16019ac), immediate", "tab:gray"),
    ("after", 0, "after, immediate", "tab:blue"),
    ("after", 16, "after, batch_ms 16", "tab:cyan"),
    ("nchan", 0, "nginx + nchan", "tab:red"),
]


def bars(ax, points, rates, value, note=None):
    """Grouped bars, one group per feed rate; returns nothing, draws on ax."""
    present = [s for s in SERIES if any(p["build"] == s[0] and p["batch_ms"] == s[1] for p in points)]
    width = 0.8 / max(len(present), 1)
    for i, (build, batch, label, colour) in enumerate(present):
        by_rate = {p["feed_rate"]: p for p in points if p["build"] == build and p["batch_ms"] == batch}
        xs, ys, ps = [], [], []
        for j, r in enumerate(rates):
            p = by_rate.get(r)
            if p is not None and value(p) is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(value(p))
                ps.append(p)
        ax.bar(xs, ys, width, label=label, color=colour)
        if note:
            for xv, yv, p in zip(xs, ys, ps):
                text = note(p)
                if text:
                    ax.annotate(text, (xv, yv), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rates)))
    ax.set_xticklabels([f"{r:,.0f}" for r in rates])
    ax.set_xlabel("feed messages/s (2,000 WS clients × 20 Zipf symbols, relay on one core)")
    ax.grid(True, axis="y", alpha=0.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--img", default="docs/img")
    a = ap.parse_args()
    data = json.load(open(a.data))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    os.makedirs(a.img, exist_ok=True)
    points = data["points"]
    rates = sorted({p["feed_rate"] for p in points})
    when = f"{data['run'].get('commit', '?')}, {data['run'].get('date', '?')}"

    def save(fig, ax, name, title):
        ax.set_title(f"{title}\n({when})", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(a.img, name), dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars(ax, points, rates, lambda p: p["cpu_us_per_frame"])
    for f, style in zip(data["floor"], ["--", ":", "-."]):
        if f.get("write_us") is not None:
            ax.axhline(f["write_us"], color="black", linestyle=style, linewidth=0.9,
                       label=f"floor, {f['bytes']:,}-B write: {f['write_us']:.2f} µs")
    ax.set_ylabel("server CPU µs per frame")
    save(fig, ax, "fanout-cpu-per-frame.png", "CPU per frame against the same run's floor")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars(ax, points, rates, lambda p: p["deliveries_per_cpu_s"],
         note=lambda p: f"{p['x_nchan']:.1f}×" if p.get("x_nchan") else None)
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_ylabel("quote deliveries per server CPU-second")
    save(fig, ax, "fanout-deliveries-per-cpu.png", "Deliveries per CPU-second (× nchan at the same feed rate)")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bars(ax, points, rates, lambda p: p["p99_ms"])
    ax.axhline(2, color="black", linestyle="--", linewidth=0.9, label="2 ms (target at half max)")
    ax.axhline(20, color="black", linestyle=":", linewidth=0.9, label="20 ms (target, batch_ms 16)")
    ax.set_yscale("log")
    ax.set_ylabel("tick-to-client p99, ms")
    save(fig, ax, "fanout-p99.png", "p99 latency per point")

    if data["idle"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{i['build']}\n{i['transport'].upper()}" for i in data["idle"]]
        colours = ["tab:gray" if i["build"] == "before" else "tab:blue" for i in data["idle"]]
        ax.bar(range(len(labels)), [i["bytes_per_connection"] for i in data["idle"]], color=colours)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.axhline(2048, color="black", linestyle="--", linewidth=0.9, label="2 KiB (target)")
        ax.set_ylabel("relay RSS bytes per idle connection")
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, ax, "fanout-idle.png", f"Idle connections ({data['idle'][0]['clients']:,} per measurement)")

    dst = os.path.join(a.img, "fanout.json")
    if os.path.abspath(a.data) != os.path.abspath(dst):
        shutil.copyfile(a.data, dst)


if __name__ == "__main__":
    main()
