"""The relay's counters around one `measure` run of scripts/fanout-point.sh.

    from fanout_metrics import delta
    delta(out, "books", 'tickrelay_book_frames_sent_total{transport="ws"}')

A name without labels sums every series of that metric.
"""
import re


def metric(text, name):
    """The value of `name` in a Prometheus text page (summed over labels)."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def delta(out, run, name):
    """How much `name` moved during `run` (its .before and .after pages)."""
    before, after = (open(f"{out}/{run}.{w}").read() for w in ("before", "after"))
    return metric(after, name) - metric(before, name)
