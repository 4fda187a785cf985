#!/usr/bin/env python3
"""CPU time of a process's threads over a window, by thread name.

    python3 scripts/thread-cpu.py PID SECONDS [--after SECONDS]

Waits --after seconds, reads /proc/PID/task/*/stat, waits SECONDS, reads
again, and prints each thread name's CPU seconds per second (utime + stime;
threads of one name, such as tokio's workers, summed) and its share of the
process's CPU.
"""
import argparse
import collections
import os
import time


def sample(pid):
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pid", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--after", type=float, default=0.0)
    args = ap.parse_args()
    time.sleep(args.after)
    a, t0 = sample(args.pid), time.monotonic()
    time.sleep(args.seconds)
    b, t1 = sample(args.pid), time.monotonic()
    by_name = collections.Counter()
    for tid, (name, cpu) in b.items():
        by_name[name] += cpu - a.get(tid, (name, 0.0))[1]
    total = sum(by_name.values()) or 1.0
    for name, cpu in by_name.most_common():
        print(f"  {name:<18} {cpu / (t1 - t0):6.1%} of a core  {cpu / total:6.1%} of the relay")


if __name__ == "__main__":
    main()
