"""top-k's fraction of the read for the same bytes in rows of different lengths.

    python benchmarks/bench_topk_rowlen.py [--rounds 5]

The same 1.6 GB of float32 scores (k=100, default backend) as 16384 x 25k, 4096 x 100k,
1024 x 400k and 256 x 1.6M: a per-element cost would give the same fraction of the parallel
read for every shape, a per-row cost a fraction that rises with the row's length. Medians of
interleaved rounds, 1 and 2 threads, each against the read of the same array and thread count
timed just before it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastrec
from fastrec.bench._floor import parallel_read
from fastrec.kernels import form_choice

SHAPES = [(16384, 25_000), (4096, 100_000), (1024, 400_000), (256, 1_600_000)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    arrays = {shape: rng.random(shape, dtype=np.float32) for shape in SHAPES}
    reads = {(s, t): parallel_read([a], t) for s, a in arrays.items() for t in (1, 2)}
    for (s, t), read in reads.items():
        read()  # compile, fault in
        fastrec.topk(arrays[s], 100, n_threads=t)
    fractions = {key: [] for key in reads}
    for _ in range(args.rounds):
        for (s, t), read in reads.items():
            t0 = time.perf_counter()
            read()
            r = time.perf_counter() - t0
            t0 = time.perf_counter()
            fastrec.topk(arrays[s], 100, n_threads=t)
            fractions[s, t].append(r / (time.perf_counter() - t0))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"CPU: {form_choice.cpu_description()}; {when}")
    print("| rows x columns | 1 thread | 2 threads |\n|---|---|---|")
    for s in SHAPES:
        cells = " | ".join(f"{np.median(fractions[s, t]):.2f}" for t in (1, 2))
        print(f"| {s[0]} x {s[1]:,} | {cells} |")


if __name__ == "__main__":
    main()
