"""Dense sigmoid scoring against the in-run read floor and NumPy.

    python benchmarks/bench_dense_sigmoid.py [--rows 2000000] [--cols 64] [--rounds 7]
        [--threads 1 2] [--dtypes float32 float64] [--orders C F]

Issue 18's case: a rows x 64 array of normal floats, ``fastrec.sigmoid_scores``
(validation included) per backend. Every implementation runs once per round, rounds
interleaved (in a rotated order), so that a shared machine's load falls on all of them
alike; medians, and ratios within this run only. Rows: the floor (a parallel read of X on
the same threads), NumPy's ``expit(X @ w + b)`` in X's dtype (BLAS limited to the same
threads), then fastrec per backend.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
import scipy.special
from threadpoolctl import threadpool_limits

import fastrec
from fastrec.bench._floor import parallel_read
from fastrec.kernels import form_choice


def _cases(X, w, threads):
    out = np.empty(X.shape[0], dtype=X.dtype)
    cases = {
        "floor (read X)": parallel_read([X], threads),
        "numpy expit(X @ w + b)": lambda: scipy.special.expit(X @ w + X.dtype.type(0.1)),
    }
    for backend in ("numba", "cython"):
        if backend in fastrec.available_backends("sigmoid_dense"):
            cases[f"fastrec {backend}"] = lambda be=backend: fastrec.sigmoid_scores(
                X, w, 0.1, out=out, backend=be, n_threads=threads
            )
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--orders", nargs="+", default=["C"])
    args = parser.parse_args(argv)
    print(f"CPU: {form_choice.cpu_description()}; numba {numba.__version__}")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    for dtype, order in [(t, o) for t in args.dtypes for o in args.orders]:
        X = rng.standard_normal((args.rows, args.cols), dtype=np.float32).astype(dtype, order=order)
        w = (rng.standard_normal(args.cols) / np.sqrt(args.cols)).astype(dtype)
        for threads in args.threads:
            cases = _cases(X, w, threads)
            with threadpool_limits(limits=threads):
                for fn in cases.values():
                    fn()  # compile, warm
                times = {name: [] for name in cases}
                load0 = os.getloadavg()[0]
                names = list(cases)
                for r in range(args.rounds):
                    # Rotated order: a case right after NumPy's BLAS call shares the cores
                    # with BLAS threads still spinning (OpenBLAS waits a while before they
                    # sleep), so no case may always come second.
                    for name in names[r % len(names) :] + names[: r % len(names)]:
                        t0 = time.perf_counter()
                        cases[name]()
                        times[name].append(time.perf_counter() - t0)
            med = {name: float(np.median(t)) for name, t in times.items()}
            floor = med["floor (read X)"]
            peer = med["numpy expit(X @ w + b)"]
            print(
                f"\n{args.rows} x {args.cols} {dtype}, {order} order, {threads} thread(s), load "
                f"{load0:.2f} -> {os.getloadavg()[0]:.2f}, medians of {args.rounds}"
            )
            print("| implementation | median ms | numpy / this | floor / this |")
            print("|---|---|---|---|")
            for name in cases:
                print(
                    f"| {name} | {med[name] * 1e3:.2f} | {peer / med[name]:.2f}x | "
                    f"{floor / med[name]:.2f} |"
                )
        del X


if __name__ == "__main__":
    main()
