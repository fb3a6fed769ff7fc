"""Issue 18's two read-bound targets across the memory states of the machine.

    python benchmarks/bench_read_states.py [--minutes 10] [--rounds 3]
        [--kernels topk topk-inf dense]

On a small VM the 2-thread read of the same array takes anywhere from about the 1-thread time
(the memory is the bottleneck) to half of it (each core streams at its own peak, and the
memory keeps up with both). A run here times, in interleaved rounds, the read floor on 1 and
2 threads and the kernel on 1 and 2 threads, for ``fastrec.topk`` (4096 x 100k float32, k=100)
and ``fastrec.sigmoid_scores`` (2M x 64 float32, C order), default backend: one line per run
(the read's scaling: 1-thread read time / 2-thread read time, of the first kernel's array),
then the medians grouped by that scaling. ``topk-inf`` is topk on Cython with its rows started
from -inf instead of their block-maxima bound (the A/B of the bounded start; needs ``topk``
too, whose read it shares).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import fastrec
from fastrec.bench._floor import parallel_read
from fastrec.kernels import form_choice

BINS = [(0.0, 1.3), (1.3, 1.6), (1.6, 1.8), (1.8, 9.0)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", nargs="+", default=["topk", "dense"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    cases = {}
    if "topk" in args.kernels:
        S = rng.random((4096, 100_000), dtype=np.float32)
        for t in (1, 2):
            cases[f"read topk {t}"] = parallel_read([S], t)
            cases[f"topk {t}"] = lambda t=t: fastrec.topk(S, 100, n_threads=t)
    if "topk-inf" in args.kernels:
        from fastrec.kernels._cython import _topk

        def from_inf(t):
            previous = _topk._set_bound(False)
            try:
                fastrec.topk(S, 100, backend="cython", n_threads=t)
            finally:
                _topk._set_bound(previous)

        for t in (1, 2):
            cases[f"topk-inf {t}"] = lambda t=t: from_inf(t)
    if "dense" in args.kernels:
        X = rng.standard_normal((2_000_000, 64), dtype=np.float32)
        w = (rng.standard_normal(64) / 8).astype(np.float32)
        out = np.empty(X.shape[0], dtype=np.float32)
        for t in (1, 2):
            cases[f"read dense {t}"] = parallel_read([X], t)
            cases[f"dense {t}"] = lambda t=t: fastrec.sigmoid_scores(
                X, w, 0.1, out=out, n_threads=t
            )
    first = args.kernels[0]
    for run in cases.values():
        run()  # compile, choose forms, warm
    print(f"CPU: {form_choice.cpu_description()}")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}")
    kernels = [k for k in ("topk", "topk-inf", "dense") if k in args.kernels]
    reads = {k: "topk" if k == "topk-inf" else k for k in kernels}
    heads = " | ".join(f"{k} {t} thr" for k in kernels for t in (1, 2))
    print(f"| run | read ({first}) 1 / 2 thr, ms | scaling | {heads} |")
    print("|---|---|---|" + "---|" * 2 * len(kernels))
    rows = []
    names = list(cases)
    end = time.time() + 60 * args.minutes
    while time.time() < end:
        times = {name: [] for name in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotated each round
            for name in order:
                t0 = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - t0)
        m = {name: float(np.median(ts)) for name, ts in times.items()}
        row = [m[f"read {first} 1"] / m[f"read {first} 2"]]
        row += [m[f"read {reads[k]} {t}"] / m[f"{k} {t}"] for k in kernels for t in (1, 2)]
        rows.append(row)
        print(
            f"| {len(rows)} | {m[f'read {first} 1'] * 1e3:.1f} / {m[f'read {first} 2'] * 1e3:.1f}"
            " | " + " | ".join(f"{v:.2f}" for v in row) + " |",
            flush=True,
        )
    a = np.array(rows)
    print("\nMedians by the 2-thread read's scaling over the 1-thread read (runs in the bin):")
    print(f"| scaling | runs | {heads} |")
    print("|---|---|" + "---|" * 2 * len(kernels))
    for lo, hi in BINS:
        sel = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        if len(sel):
            med = np.median(sel[:, 1:], axis=0)
            cells = " | ".join(f"{v:.2f}" for v in med)
            print(f"| {lo:.1f}-{hi:.1f} | {len(sel)} | {cells} |")
    print(
        f"| all | {len(a)} | " + " | ".join(f"{v:.2f}" for v in np.median(a[:, 1:], axis=0)) + " |"
    )


if __name__ == "__main__":
    main()
