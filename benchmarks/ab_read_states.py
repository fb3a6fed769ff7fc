"""A/B of two builds across the memory states: bench_read_states.py in alternated processes.

    python benchmarks/ab_read_states.py OLD_SRC NEW_SRC [--pairs 8] [--minutes 1]
        [--kernels dense]

OLD_SRC and NEW_SRC are the ``src`` folders of two built checkouts (``git worktree add``, then
``python setup.py build_ext --inplace`` in each); each stretch imports fastrec from one of them
(PYTHONPATH) and runs ``bench_read_states.py --minutes <minutes>``, the two builds in turn (the
order swapped every pair), so that both see the machine's states alike. Two builds of one
module cannot share a process, and a stretch of one build after the other would compare
memory states rather than builds. Prints the medians of every run by the read's scaling, per
build (fractions of the read of the same run: 1 and 2 threads per kernel).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

BINS = [(0.0, 1.3), (1.3, 1.8), (1.8, 9.0)]
RUN = re.compile(r"\| (\d+) \| [\d.]+ / [\d.]+ \| (.*) \|$")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--kernels", nargs="+", default=["dense"])
    args = parser.parse_args(argv)
    script = Path(__file__).with_name("bench_read_states.py")
    builds = {"old": args.old, "new": args.new}
    rows = {name: [] for name in builds}
    for p in range(args.pairs):
        for name in ("old", "new") if p % 2 == 0 else ("new", "old"):
            env = dict(os.environ, PYTHONPATH=builds[name])
            cmd = [sys.executable, str(script), "--minutes", str(args.minutes), "--kernels"]
            done = subprocess.run(cmd + args.kernels, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} build failed:\n{done.stderr}")
            runs = [RUN.match(line) for line in done.stdout.splitlines()]
            runs = [[float(v) for v in m.group(2).split(" | ")] for m in runs if m]
            if not runs:  # bench_read_states.py's run lines changed, or no run fit the time
                sys.exit(f"no runs read from the {name} build's output:\n{done.stdout}")
            rows[name] += runs
            print(f"pair {p + 1}: {name}, {len(rows[name])} runs", flush=True)
    heads = " | ".join(f"{k} {t} thr" for k in args.kernels for t in (1, 2))
    print(f"\n| build | scaling | runs | {heads} |")
    print("|---|---|---|" + "---|" * 2 * len(args.kernels))
    for name, r in rows.items():
        a = np.array(r)
        for lo, hi in BINS:
            sel = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
            if len(sel):
                cells = " | ".join(f"{v:.3f}" for v in np.median(sel[:, 1:], axis=0))
                print(f"| {name} | {lo:.1f}-{hi:.1f} | {len(sel)} | {cells} |")


if __name__ == "__main__":
    main()
