#!/usr/bin/env python3
"""The fan-out tables of docs/BENCHMARKS.md from one run's reports.

    python3 scripts/fanout-table.py OUT_DIR [--floor-us 4.4]
    python3 scripts/fanout-table.py OUT_DIR --report OUT_DIR/results.md

Without --report: one row per point of scripts/bench-e2e.sh in OUT_DIR:
deliveries/s, frames/s, server CPU per frame in µs and as a multiple of the
floor given (the CPU of one bare `write` per frame, `cargo bench --bench
floor`), deliveries per CPU-second, latency p50/p99.

With --report (OUT_DIR of scripts/bench-fanout.sh): gathers the run (floor-*.txt,
the points' JSON, idle-*.txt, parts.tsv, run.txt) into OUT_DIR/fanout.json, the
data scripts/fanout-plot.py draws, and writes the results: the floor, the
fan-out points against the same run's floor and nchan, idle memory, and the
fan-out targets (docs/BENCHMARKS.md), each met or missed by the measured value.
"""
import argparse
import glob
import json
import math
import os
import re

# The fan-out targets.
FLOOR_MULTIPLE = 1.3
NCHAN_MULTIPLE = 2.0
HALF_MAX_P99_MS = 2.0
BATCH_NCHAN_MULTIPLE = 5.0
BATCH_P99_MS = 20.0
IDLE_BYTES = 2048
# The relay's max: the lowest feed rate at which its core is this busy.
SATURATED = 0.95


def load_points(out):
    """Every point report in OUT, with the derived figures."""
    points = []
    for f in sorted(glob.glob(os.path.join(out, "*.json"))):
        if os.path.basename(f) in ("all.json", "fanout.json"):
            continue
        r = json.load(open(f))
        s = r.get("server") or {}
        cpu = s.get("cpu_s", 0.0)
        secs = r["seconds"]
        name = r["name"]
        frames = r["frames"]
        b = re.search(r"-b(\d+)-", name)
        points.append({
            "name": name,
            "system": r["system"],
            "build": "nchan" if r["system"] == "nchan" else ("before" if name.startswith("before-") else "after"),
            "batch_ms": int(b.group(1)) if b else 0,
            "feed_rate": r["feed_rate"],
            "offered_per_s": r["offered_per_s"],
            "delivered_per_s": r["quotes_per_s"],
            "frames_per_s": r["frames_per_s"],
            "frame_bytes": r["bytes"] / frames if frames else math.nan,
            "server_cpu": cpu / secs,
            "cpu_us_per_frame": cpu / frames * 1e6 if frames else math.nan,
            "deliveries_per_cpu_s": r["quotes"] / cpu if cpu else math.nan,
            "p50_ms": r["latency_us"]["p50"] / 1e3,
            "p99_ms": r["latency_us"]["p99"] / 1e3,
            "load_cpu": r["load"]["cpu_s"] / secs,
            "clients": r["connected"],
            "quotes_per_frame": r["quotes"] / frames if frames else math.nan,
        })
    return points


def old_table(args):
    floor = args.floor_us
    print("| point | feed msg/s | delivered/s | frames/s | server CPU | CPU µs/frame |"
          + (" × floor |" if floor else "") + " deliveries per CPU-s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|" + ("---|" if floor else "") + "---|---|---|")
    for p in load_points(args.out):
        usf = p["cpu_us_per_frame"]
        mult = f" {usf / floor:.2f} |" if floor else ""
        print(f"| {p['name']} | {p['feed_rate']:,.0f} | {p['delivered_per_s']:,.0f} | {p['frames_per_s']:,.0f} "
              f"| {p['server_cpu']:.0%} | {usf:.2f} |{mult} {p['deliveries_per_cpu_s']:,.0f} "
              f"| {p['p50_ms']:.2f} | {p['p99_ms']:.2f} |")


FLOOR_LINE = re.compile(r"^floor/(\w+): (\d+) sockets, (\d+)-byte frames: (\d+) frames, .*\(([\d.]+) µs/frame\)")


def load_floor(out):
    floors = {}
    for f in glob.glob(os.path.join(out, "floor-[0-9]*.txt")):
        for line in open(f):
            m = FLOOR_LINE.match(line)
            if m:
                kind, sockets, size, frames, us = m.groups()
                fl = floors.setdefault(int(size), {"bytes": int(size), "sockets": int(sockets)})
                fl[f"{kind}_us"] = float(us)
                fl[f"{kind}_frames"] = int(frames)
    return [floors[k] for k in sorted(floors)]


PACE_LINE = re.compile(r"^floor/paced: ([\d.]+) bursts/s of (\d+) frames")


def load_paced(out):
    """The paced floor of each point (floor-paced-NAME.txt), by point name."""
    paced = {}
    for f in glob.glob(os.path.join(out, "floor-paced-*.txt")):
        name = os.path.basename(f)[len("floor-paced-"):-len(".txt")]
        fl = {}
        for line in open(f):
            m, pace = FLOOR_LINE.match(line), PACE_LINE.match(line)
            if m:
                fl.update(bytes=int(m.group(3)), frames=int(m.group(4)), us=float(m.group(5)))
            elif pace:
                fl.update(hz=float(pace.group(1)), burst=int(pace.group(2)))
        if "us" in fl:
            paced[name] = fl
    return paced


IDLE_LINE = re.compile(r"^(\w+): (\d+) idle connections, relay RSS (\d+) -> (\d+) KiB, (-?\d+) bytes")


def load_idle(out):
    idle = []
    for f in sorted(glob.glob(os.path.join(out, "idle-*-*.txt"))):
        build, transport = os.path.basename(f)[5:-4].split("-", 1)
        for line in open(f):
            m = IDLE_LINE.match(line)
            if m:
                idle.append({"build": build, "transport": transport, "clients": int(m.group(2)),
                             "rss_kib_before": int(m.group(3)), "rss_kib_after": int(m.group(4)),
                             "bytes_per_connection": int(m.group(5))})
    return sorted(idle, key=lambda i: (i["build"] != "before", i["transport"] != "ws"))


def load_parts(out):
    parts = {}
    path = os.path.join(out, "parts.tsv")
    if os.path.exists(path):
        for line in open(path):
            name, edge, when, load = line.rstrip("\n").split("\t")
            parts.setdefault(name, {"part": name})[edge] = {"utc": when, "loadavg": load}
    return list(parts.values())


def load_run(out):
    run = {}
    path = os.path.join(out, "run.txt")
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.partition(": ")
            run[k.strip()] = v.strip()
    return run


def gather(out):
    """The run as one dictionary: what fanout.json holds."""
    floor = load_floor(out)
    points = load_points(out)
    write_floor = {f["bytes"]: f["write_us"] for f in floor if "write_us" in f}
    nchan = {p["feed_rate"]: p for p in points if p["build"] == "nchan"}
    paced = load_paced(out)
    for p in points:
        if p["name"] in paced:
            p["paced_floor"] = paced[p["name"]]
            p["x_floor_paced"] = p["cpu_us_per_frame"] / paced[p["name"]]["us"]
        if write_floor:
            if 300 in write_floor:
                p["x_floor_300"] = p["cpu_us_per_frame"] / write_floor[300]
            near = min(write_floor, key=lambda b: abs(b - p["frame_bytes"])) if p["frame_bytes"] == p["frame_bytes"] else None
            if near is not None:
                p["floor_near_bytes"] = near
                p["x_floor_near"] = p["cpu_us_per_frame"] / write_floor[near]
        peer = nchan.get(p["feed_rate"])
        if peer and p["build"] != "nchan":
            p["x_nchan"] = p["deliveries_per_cpu_s"] / peer["deliveries_per_cpu_s"]
    order = {"before": 0, "after": 1, "nchan": 2}
    points.sort(key=lambda p: (p["feed_rate"], order[p["build"]], p["batch_ms"]))
    return {"run": load_run(out), "parts": load_parts(out), "floor": floor, "points": points,
            "idle": load_idle(out), "targets": targets(points, load_idle(out))}


def span(values, fmt):
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def x(v):
    return f"{v:.2f}"


def verdict(target, ok, measured, rule):
    return {"target": target, "verdict": "not measured" if ok is None else ("met" if ok else "missed"),
            "measured": measured, "rule": rule}


def targets(points, idle):
    after = [p for p in points if p["build"] == "after"]
    imm = [p for p in after if p["batch_ms"] == 0]
    b16 = [p for p in after if p["batch_ms"] == 16]
    rows = []

    f = [p for p in after if "x_floor_near" in p]
    if f:
        worst = max(f, key=lambda p: p["x_floor_near"])
        rows.append(verdict(
            f"CPU per frame ≤ {FLOOR_MULTIPLE}× the floor", all(p["x_floor_near"] <= FLOOR_MULTIPLE for p in f),
            f"{span([p['x_floor_near'] for p in f], x)}× the floor nearest each point's frame size "
            f"(worst {worst['name']}: {worst['cpu_us_per_frame']:.2f} µs, {worst['frame_bytes']:.0f}-B frames, "
            f"{worst['floor_near_bytes']}-B floor); "
            + (f"{span([p['x_floor_300'] for p in f], x)}× the 300-B floor" if "x_floor_300" in f[0] else ""),
            "every after point, against the `write` floor nearest its mean frame size"))
    else:
        rows.append(verdict(f"CPU per frame ≤ {FLOOR_MULTIPLE}× the floor", None, "no floor or no points", ""))

    for label, pick in (("one-quote frames", lambda q: q < 1.5), ("frames of 2 quotes or more", lambda q: q >= 1.5)):
        f = [p for p in after if "x_floor_paced" in p and pick(p["quotes_per_frame"])]
        rows.append(verdict(
            f"CPU per frame ≤ {FLOOR_MULTIPLE}× the paced floor, {label}",
            all(p["x_floor_paced"] <= FLOOR_MULTIPLE for p in f) if f else None,
            ", ".join(f"{p['name']}: {p['x_floor_paced']:.2f}× ({p['cpu_us_per_frame']:.2f} against "
                      f"{p['paced_floor']['us']:.2f} µs, {p['quotes_per_frame']:.1f} quotes a frame)" for p in f)
            or "no paced floor",
            "every after point, against the floor written in the point's own bursts "
            "(its fan-out rounds a second, its frames a round, its mean frame size)"))

    def against_nchan(points, multiple, label, rule):
        n = [p for p in points if "x_nchan" in p]
        rows.append(verdict(
            f"{label}≥ {multiple:g}× nchan deliveries per CPU-second",
            all(p["x_nchan"] >= multiple for p in n) if n else None,
            ", ".join(f"{p['feed_rate']:,.0f} msg/s: {p['x_nchan']:.1f}×" for p in n) or "no nchan points",
            f"{rule}, against nchan at the same feed rate"))

    against_nchan(imm, NCHAN_MULTIPLE, "", "after, immediate")

    sat = sorted((p for p in imm if p["server_cpu"] >= SATURATED), key=lambda p: p["feed_rate"])
    if sat:
        max_rate, note = sat[0]["feed_rate"], f"max {sat[0]['feed_rate']:,.0f} msg/s (relay CPU {sat[0]['server_cpu']:.0%})"
    elif imm:
        max_rate = max(p["feed_rate"] for p in imm)
        note = f"relay never ≥ {SATURATED:.0%} busy: max ≥ {max_rate:,.0f} msg/s, half taken as {max_rate / 2:,.0f}"
    if imm:
        half = min((p for p in imm if p["feed_rate"] <= max_rate / 2), key=lambda p: max_rate / 2 - p["feed_rate"],
                   default=None)
        if half:
            rows.append(verdict(
                f"p99 ≤ {HALF_MAX_P99_MS:g} ms at half the relay's max", half["p99_ms"] <= HALF_MAX_P99_MS,
                f"{note}; at {half['feed_rate']:,.0f} msg/s: p99 {half['p99_ms']:.2f} ms "
                f"(relay CPU {half['server_cpu']:.0%})",
                f"after, immediate; max = the lowest feed rate with the relay's core ≥ {SATURATED:.0%} busy; "
                "the highest rate measured at or below half of it"))
        else:
            rows.append(verdict(f"p99 ≤ {HALF_MAX_P99_MS:g} ms at half the relay's max", None,
                                f"{note}; no point at or below {max_rate / 2:,.0f} msg/s", ""))

    against_nchan(b16, BATCH_NCHAN_MULTIPLE, "batch_ms 16: ", "after, batch_ms 16")
    rows.append(verdict(
        f"batch_ms 16: p99 ≤ {BATCH_P99_MS:g} ms",
        all(p["p99_ms"] <= BATCH_P99_MS for p in b16) if b16 else None,
        ", ".join(f"{p['feed_rate']:,.0f} msg/s: {p['p99_ms']:.1f} ms" for p in b16) or "no batch_ms points",
        f"after, batch_ms 16, every feed rate, {b16[0]['clients']:,} clients" if b16 else ""))

    ia = [i for i in idle if i["build"] == "after"]
    rows.append(verdict(
        f"idle WS / SSE ≤ {IDLE_BYTES // 1024} KiB per connection",
        all(i["bytes_per_connection"] <= IDLE_BYTES for i in ia) if ia else None,
        ", ".join(f"{i['transport'].upper()} {i['bytes_per_connection']:,} B" for i in ia) or "not measured",
        f"after, {ia[0]['clients']:,} idle connections, a fresh relay each" if ia else ""))
    return rows


def fmt(v, spec, dash="—"):
    return dash if v is None or v != v else format(v, spec)


def change(before, after, spec):
    """'before → after (±n%)'."""
    pct = f" ({(after / before - 1):+.0%})" if before else ""
    return f"{fmt(before, spec)} → {fmt(after, spec)}{pct}"


def report(data):
    out = []
    run = data["run"]
    out.append("# Fan-out benchmark, one run\n")
    out.append(f"Commit {run.get('commit', '?')} (after) against {run.get('before', '?')} (before), "
               f"{run.get('date', '?')}, {run.get('cpu', '?')}; {run.get('duration', '')}; "
               f"the run took {run.get('seconds', '?')} s. Relay pinned to core 0 (`--fanout-shards 1`; "
               "before has no shards), simulator and load generator on core 1.\n")
    out.append("| part | start (UTC) | load average | end (UTC) | load average |\n|---|---|---|---|---|")
    for p in data["parts"]:
        b, e = p.get("begin", {}), p.get("end", {})
        out.append(f"| {p['part']} | {b.get('utc', '—')} | {b.get('loadavg', '—')} "
                   f"| {e.get('utc', '—')} | {e.get('loadavg', '—')} |")

    out.append("\n## The floor (`benches/floor.rs`)\n")
    out.append("| frame | sockets | `write` µs/frame | `writev` µs/frame |\n|---|---|---|---|")
    for f in data["floor"]:
        out.append(f"| {f['bytes']:,} B | {f['sockets']:,} | {fmt(f.get('write_us'), '.2f')} "
                   f"| {fmt(f.get('writev_us'), '.2f')} |")
    paced = [p for p in data["points"] if "paced_floor" in p]
    if paced:
        out.append("\nPaced, in each point's own bursts (`FLOOR_PACE_HZ`, `FLOOR_BURST`):\n")
        out.append("| point | bursts/s | frames a burst | frame | paced µs/frame | relay µs/frame | × paced |")
        out.append("|---|---|---|---|---|---|---|")
        for p in paced:
            f = p["paced_floor"]
            out.append(f"| {p['name']} | {f.get('hz', math.nan):,.1f} | {f.get('burst', 0):,} | {f['bytes']:,} B "
                       f"| {f['us']:.2f} | {p['cpu_us_per_frame']:.2f} | {p['x_floor_paced']:.2f} |")

    out.append("\n## Fan-out: WebSocket clients × 20 Zipf symbols\n")
    out.append("× floor: the relay's CPU per frame over the same run's `write` floor, at 300 B and at the "
               "floor size nearest the point's mean frame. × nchan: deliveries per CPU-second over nchan's "
               "at the same feed rate.\n")
    out.append("| point | clients | feed msg/s | delivered/s | frames/s | frame B | server CPU | CPU µs/frame "
               "| × floor (300 B) | × floor (nearest) | deliveries per CPU-s | × nchan | p50 ms | p99 ms "
               "| load gen CPU |")
    out.append("|" + "---|" * 15)
    for p in data["points"]:
        mode = "nchan" if p["build"] == "nchan" else (
            f"{p['build']}, " + ("immediate" if p["batch_ms"] == 0 else f"batch_ms {p['batch_ms']}"))
        near = (f"{p['x_floor_near']:.2f} ({p['floor_near_bytes']:,} B)" if "x_floor_near" in p else "—")
        out.append(
            f"| {mode} | {p['clients']:,} | {p['feed_rate']:,.0f} | {p['delivered_per_s']:,.0f} "
            f"| {p['frames_per_s']:,.0f} | {fmt(p['frame_bytes'], ',.0f')} | {p['server_cpu']:.0%} "
            f"| {fmt(p['cpu_us_per_frame'], '.2f')} | {fmt(p.get('x_floor_300'), '.2f')} | {near} "
            f"| {fmt(p['deliveries_per_cpu_s'], ',.0f')} | {fmt(p.get('x_nchan'), '.1f')} "
            f"| {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['load_cpu']:.0%} |")

    pairs = [(b, a) for a in data["points"] if a["build"] == "after" and a["batch_ms"] == 0
             for b in data["points"] if b["build"] == "before" and b["feed_rate"] == a["feed_rate"]]
    if pairs:
        out.append("\n### Before → after, immediate, at the same feed rate\n")
        out.append("| feed msg/s | CPU µs/frame | frames/s | delivered/s | deliveries per CPU-s | p99 ms |")
        out.append("|---|---|---|---|---|---|")
        for b, a in pairs:
            out.append(
                f"| {a['feed_rate']:,.0f} | {change(b['cpu_us_per_frame'], a['cpu_us_per_frame'], '.2f')} "
                f"| {change(b['frames_per_s'], a['frames_per_s'], ',.0f')} "
                f"| {change(b['delivered_per_s'], a['delivered_per_s'], ',.0f')} "
                f"| {change(b['deliveries_per_cpu_s'], a['deliveries_per_cpu_s'], ',.0f')} "
                f"| {b['p99_ms']:.2f} → {a['p99_ms']:.2f} |")

    out.append("\n## Idle connections (`scripts/idle-memory.py`, a fresh `tickrelay demo --rate 0` each)\n")
    out.append("| build | transport | connections | relay RSS without → with them | per connection |\n|---|---|---|---|---|")
    for i in data["idle"]:
        out.append(f"| {i['build']} | {i['transport'].upper()} | {i['clients']:,} "
                   f"| {i['rss_kib_before']:,} → {i['rss_kib_after']:,} KiB "
                   f"| {i['bytes_per_connection']:,} B ({i['bytes_per_connection'] / 1024:.2f} KiB) |")
    idle = {(i["build"], i["transport"]): i["bytes_per_connection"] for i in data["idle"]}
    both = [t for t in ("ws", "sse") if ("before", t) in idle and ("after", t) in idle]
    if both:
        out.append("\n| bytes per idle connection | before → after |\n|---|---|")
        for t in both:
            out.append(f"| {t.upper()} | {change(idle[('before', t)], idle[('after', t)], ',.0f')} |")

    out.append("\n## Targets (computed from the tables above)\n")
    out.append("| target | verdict | measured | how |\n|---|---|---|---|")
    for t in data["targets"]:
        out.append(f"| {t['target']} | **{t['verdict']}** | {t['measured']} | {t['rule']} |")
    return "\n".join(out) + "\n"


def no_nan(v):
    """JSON has no NaN: a figure that could not be computed is null."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: no_nan(w) for k, w in v.items()}
    if isinstance(v, list):
        return [no_nan(w) for w in v]
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--floor-us", type=float, default=None, help="floor CPU per frame, µs")
    ap.add_argument("--report", help="write the whole run's results here (and OUT/fanout.json)")
    args = ap.parse_args()
    if not args.report:
        old_table(args)
        return
    data = gather(args.out)
    with open(os.path.join(args.out, "fanout.json"), "w") as f:
        json.dump(no_nan(data), f, indent=1, allow_nan=False)
    with open(args.report, "w") as f:
        f.write(report(data))


if __name__ == "__main__":
    main()
