#!/usr/bin/env python3
"""Plot for scripts/bench: the fire-delay distributions side by side.

usage: bench_plot.py DATA.json OUT.png

DATA.json: {"title": str, "series": [{"label": str, "delays": [ms, ...]}]}.
One box (quartiles, whiskers at p1/p99) per series with every sample drawn
over it, on a log scale: the peers span 1 ms to 2 s.
"""
import json
import math
import random
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

data = json.load(open(sys.argv[1]))
series = [s for s in data["series"] if s["delays"]]
fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(series) + 2), 5.5), dpi=110)
vals = [[max(d, 0.01) for d in s["delays"]] for s in series]
ax.boxplot(vals, whis=(1, 99), showfliers=False, widths=0.5)
rnd = random.Random(1)
for i, v in enumerate(vals, start=1):
    pts = v if len(v) <= 3000 else rnd.sample(v, 3000)
    ax.scatter([i + rnd.uniform(-0.18, 0.18) for _ in pts], pts, s=4, alpha=0.35)
    p50 = sorted(v)[max(1, math.ceil(len(v) / 2)) - 1]  # nearest rank, as the table
    ax.annotate(f"p50 {p50:.3g} ms\nn={len(v)}", (i, max(v)), textcoords="offset points",
                xytext=(0, 6), ha="center", fontsize=7)
ax.set_yscale("log")
ax.set_ylim(top=max(max(v) for v in vals) * 4)
ax.set_xticks(range(1, len(series) + 1), [s["label"] for s in series], fontsize=8)
ax.set_ylabel("delay (ms, log scale)")
ax.set_title(data["title"], fontsize=10)
ax.grid(axis="y", which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2])
