#!/usr/bin/env python3
"""How many of the fan-out benchmark's clients watch each of the hottest
symbols: 2,000 clients drawing 20 of 1,000 symbols with Zipf 1.0 weights,
as `tickrelay load --zipf 1.0` draws them (seed 1). docs/BENCHMARKS.md, "p99
at half the maximum", uses it to bound the sweep of one change.

    python3 scripts/zipf-watchers.py [CLIENTS] [PER_CLIENT] [SYMBOLS] [TOP]
"""
import random
import sys

clients, per_client, symbols, top = (int(a) for a in (sys.argv[1:] + ["2000", "20", "1000", "5"][len(sys.argv) - 1:]))
random.seed(1)
weights = [1 / k for k in range(1, symbols + 1)]
watchers = [0] * top
for _ in range(clients):
    drawn = set()
    while len(drawn) < per_client:
        drawn.add(random.choices(range(symbols), weights=weights)[0])
    watchers = [n + (i in drawn) for i, n in enumerate(watchers)]
print(watchers)
