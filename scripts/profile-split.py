#!/usr/bin/env python3
"""Where a fan-out writer's CPU goes, from a `perf record -g` profile.

    python3 scripts/profile-split.py PERF.DATA [--tid TID] [--comm NAME] [--per-frame-us US]

Reads `perf script` and puts every sample of the chosen thread (by thread id,
or by thread name such as `fanout-0`) in one bucket, by its call stack:

- user: the relay's (or the floor's) own code and libc;
- waking the reader: the loopback delivery reaching a reader that sleeps
  (`sock_def_readable` and the wake-up under it): a cost of the reader
  being idle, paid by the writer on loopback;
- send path: `sendto`/`write` down to the device, ACK processing included;
- loopback receive: the receive side the loopback device runs on the
  writer's core (`net_rx_action` … `tcp_v4_rcv`), other than the wake-up;
- scheduler and epoll: the writer's own sleeps, wake-ups and preemption;
- other kernel.

With --per-frame-us (the run's CPU µs per frame) each share is also given in
µs per frame. scripts/profile-fanout.sh runs a point and calls this.
"""
import argparse
import collections
import subprocess
import sys

BUCKETS = [
    "user",
    "waking the reader",
    "send path",
    "loopback receive",
    "scheduler and epoll",
    "other kernel",
]


def classify(frames):
    """frames: list of (symbol, dso), innermost first."""
    if not frames:
        return "other kernel"
    top_sym, top_dso = frames[0]
    if "kernel" not in top_dso:
        return "user"
    syms = [s for s, _ in frames]
    if any(s.startswith(("sock_def_readable", "ep_poll_callback", "try_to_wake_up")) for s in syms):
        return "waking the reader"
    if any(s.startswith(("schedule", "finish_task_switch", "do_epoll_wait", "ep_poll",
                         "exit_to_user_mode_loop", "futex_")) for s in syms):
        return "scheduler and epoll"
    if any(s.startswith(("net_rx_action", "process_backlog", "tcp_v4_rcv")) for s in syms):
        return "loopback receive"
    if any(s.startswith(("__sys_sendto", "__x64_sys_sendto", "tcp_sendmsg", "__x64_sys_write",
                         "ksys_write", "vfs_write", "do_writev", "__x64_sys_writev",
                         "tcp_ack", "__release_sock")) for s in syms):
        return "send path"
    return "other kernel"


def samples(data):
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    head, frames = None, []
    for line in out.splitlines() + [""]:
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif head is None:
            parts = line.split()
            head = (" ".join(parts[:-1]), int(parts[-1]))
        else:
            parts = line.strip().split(None, 1)
            rest = parts[1] if len(parts) > 1 else ""
            sym, _, dso = rest.rpartition(" (")
            frames.append((sym.split("+0x")[0], dso.rstrip(")")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--tid", type=int)
    ap.add_argument("--writer", action="store_true",
                    help="the thread with the most samples in a write or send system call")
    ap.add_argument("--comm")
    ap.add_argument("--per-frame-us", type=float)
    args = ap.parse_args()
    all_samples = list(samples(args.data))
    if args.writer:
        writes = collections.Counter(
            tid for (_, tid), frames in all_samples
            if any(s.startswith(("__x64_sys_write", "__x64_sys_sendto")) for s, _ in frames))
        if not writes:
            sys.exit("no thread writes")
        args.tid = writes.most_common(1)[0][0]
    counts = collections.Counter()
    threads = collections.Counter()
    for (comm, tid), frames in all_samples:
        threads[comm] += 1
        if args.tid is not None and tid != args.tid:
            continue
        if args.comm is not None and comm != args.comm:
            continue
        counts[classify(frames)] += 1
    total = sum(counts.values())
    if not total:
        sys.exit("no samples for that thread")
    who = f"thread {args.tid}" if args.tid is not None else (args.comm or "all threads")
    # With --comm, --per-frame-us is the whole process's: the buckets are
    # the named thread's share of it, the other threads' shares follow.
    everyone = sum(threads.values())
    scale = total / everyone if args.comm is not None else 1.0
    print(f"{total} samples of {who} ({scale:.1%} of the process's)")
    for b in BUCKETS:
        share = counts[b] / total
        us = f"  {share * scale * args.per_frame_us:5.2f} µs/frame" if args.per_frame_us else ""
        print(f"  {b:<20} {share:6.1%}{us}")
    if args.comm is not None:
        for comm, n in threads.most_common():
            if comm != args.comm and n / everyone >= 0.005:
                us = f"  {n / everyone * args.per_frame_us:5.2f} µs/frame" if args.per_frame_us else ""
                print(f"  {'thread ' + comm:<20} {n / everyone:6.1%}{us}")

if __name__ == "__main__":
    main()
