#!/usr/bin/env python3
"""The fan-out table of docs/BENCHMARKS.md from scripts/bench-e2e.sh reports.

    python3 scripts/fanout-table.py OUT_DIR [--floor-us 4.4]

One row per point: deliveries/s, frames/s, server CPU per frame in µs and as a
multiple of the floor (the CPU of one bare `write` per frame, from
`cargo bench --bench floor`), deliveries per CPU-second, latency p50/p99.
"""
import argparse
import glob
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--floor-us", type=float, default=None, help="floor CPU per frame, µs")
    args = ap.parse_args()
    rows = []
    for f in sorted(glob.glob(os.path.join(args.out, "*.json"))):
        if f.endswith("all.json"):
            continue
        r = json.load(open(f))
        s = r.get("server") or {}
        cpu = s.get("cpu_s", 0.0)
        secs = r["seconds"]
        frames = r["frames_per_s"] * secs
        quotes = r["quotes_per_s"] * secs
        us_frame = cpu / frames * 1e6 if frames else float("nan")
        rows.append((r["name"], r["feed_rate"], r["quotes_per_s"], r["frames_per_s"], cpu / secs,
                     us_frame, quotes / cpu if cpu else float("nan"),
                     r["latency_us"]["p50"] / 1e3, r["latency_us"]["p99"] / 1e3))
    floor = args.floor_us
    print("| point | feed msg/s | delivered/s | frames/s | server CPU | CPU µs/frame |"
          + (" × floor |" if floor else "") + " deliveries per CPU-s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|" + ("---|" if floor else "") + "---|---|---|")
    for n, rate, q, fr, cpu, usf, per_cpu, p50, p99 in rows:
        mult = f" {usf / floor:.2f} |" if floor else ""
        print(f"| {n} | {rate:,.0f} | {q:,.0f} | {fr:,.0f} | {cpu:.0%} | {usf:.2f} |{mult}"
              f" {per_cpu:,.0f} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
