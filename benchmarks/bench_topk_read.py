"""topk against the in-run read floor, each backend in each float32 form.

    python benchmarks/bench_topk_read.py [--rows 4096] [--cols 100000] [--k 100] [--rounds 7]

Issue 18's case: a 4096 x 100k float32 score array (uniform random, so candidates keep
arriving along each row), k=100, 1 and 2 threads. Every implementation runs once per round,
rounds interleaved, so that a shared machine's load falls on all of them alike; medians, and
ratios within this run only. Rows: the floor (a parallel read of the array on the same
threads), then ``fastrec.topk`` per backend in the form chosen for this CPU ("auto") and in
each float32 form (kernels.topk_forms: "compress" and the bit-mask "walk").
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import fastrec
from fastrec.bench._floor import parallel_read
from fastrec.kernels import topk_forms


def _cases(S, k, threads):
    cases = {"read floor": parallel_read([S], threads)}
    for backend in topk_forms.BACKENDS:
        if backend not in fastrec.available_backends("topk"):
            continue

        def auto(be=backend):
            fastrec.topk(S, k, backend=be, n_threads=threads)

        cases[f"{backend} (auto)"] = auto
        for compress in (True, False):
            if compress and not topk_forms.compress_available(backend):
                continue

            def forced(be=backend, c=compress):
                with topk_forms.float32_form(be, c):
                    fastrec.topk(S, k, backend=be, n_threads=threads)

            cases[f"{backend} {'compress' if compress else 'walk'}"] = forced
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    S = np.random.default_rng(0).random((args.rows, args.cols), dtype=np.float32)
    print(f"CPU: {platform.processor() or platform.machine()}; numpy {np.__version__}")
    for threads in args.threads:
        cases = _cases(S, args.k, threads)
        for run in cases.values():
            run()  # compile, choose forms, warm
        times = {name: [] for name in cases}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, run in cases.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        floor = np.median(times["read floor"])
        print(
            f"\n{args.rows} x {args.cols} float32, k={args.k}, {threads} thread(s), load average"
            f" {load:.2f} -> {os.getloadavg()[0]:.2f}, medians of {args.rounds}"
        )
        print("| implementation | median ms | of read floor |\n|---|---|---|")
        for name, ts in times.items():
            m = np.median(ts)
            print(f"| {name} | {m * 1e3:.1f} | {floor / m:.2f} |")


if __name__ == "__main__":
    main()
