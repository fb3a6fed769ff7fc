"""dot_topk against its anchors (issue 15's table), all in one run: every user's top-10 of
64 float32 factors with that user's seen items (the "mid" interaction pattern) excluded.

    python benchmarks/bench_dot_topk.py [--items 20000 100000] [--repeat 3] [--threads 2]

Rows: the BLAS floor (NumPy's sgemm over the whole product in 4096-row blocks, written, nothing
selected), fastrec.dot_topk per compiled backend, implicit 0.7's ALS.recommend(all users,
filter_already_liked_items=True) on the same factors, and NumPy (blocked product, seen set to
-inf, argpartition + sort; timed on the first 5,000 users and scaled to all, said so in its
row). Medians of --repeat runs; the ratio column is BLAS time / row time (above 1: faster
than writing the product). Peak extra memory of fastrec (tracemalloc, Cython) is printed too.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

import fastrec

N_USERS, N_FACTORS, K = 50_000, 64, 10


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_name():
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor()
    return (
        f"{fields.get('model name')} (family {fields.get('cpu family')}, model "
        f"{fields.get('model')})"
    )


class _Rows(list):
    """The table's rows, each also printed as soon as it is measured."""

    def append(self, row):
        n, what, t = row
        print(f"  {n} items: {what}: {'-' if t is None else f'{t:.2f} s'}", flush=True)
        super().append(row)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    T = args.threads
    print(f"CPU: {cpu_name()}; {T} threads; medians of {args.repeat}")
    rng = np.random.default_rng(0)
    Q = (rng.standard_normal((N_USERS, N_FACTORS)) * 0.1).astype(np.float32)
    rows = _Rows()
    for n_items in args.items:
        X = (rng.standard_normal((n_items, N_FACTORS)) * 0.1).astype(np.float32)
        seen = datasets.generate(N_USERS, n_items, datasets.SIZES["mid"][2], seed=0)
        seen.sort_indices()

        def blas():
            out = np.empty((4096, n_items), np.float32)
            for r0 in range(0, N_USERS, 4096):
                r1 = min(N_USERS, r0 + 4096)
                np.dot(Q[r0:r1], X.T, out=out[: r1 - r0])

        with threadpool_limits(T, user_api="blas"):
            floor = median_time(blas, args.repeat)
        rows.append((n_items, "BLAS sgemm, 4096-row blocks (written, no selection)", floor))
        results = {}
        for backend in fastrec.available_backends("dot_topk"):
            if backend in ("numpy", "cuda"):
                continue
            fastrec.dot_topk(Q[:600], X, K, exclude=seen[:600], backend=backend)  # compile

            def run():
                return fastrec.dot_topk(Q, X, K, exclude=seen, backend=backend, n_threads=T)

            rows.append(
                (n_items, f"fastrec.dot_topk backend={backend}", median_time(run, args.repeat))
            )
            results[backend] = run()
            if backend == "cython":
                tracemalloc.start()
                run()
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                out_bytes = N_USERS * K * 12
                print(
                    f"{n_items} items: fastrec (cython) peak traced memory {peak / 2**20:.1f} "
                    f"MB, of which output {out_bytes / 2**20:.1f} MB"
                )
        try:
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(factors=N_FACTORS, num_threads=T)
            model.user_factors, model.item_factors = Q, X
            users = np.arange(N_USERS)

            def rec():
                return model.recommend(users, seen, N=K, filter_already_liked_items=True)

            rows.append(
                (
                    n_items,
                    "implicit 0.7 ALS.recommend(all users, filter liked)",
                    median_time(rec, args.repeat),
                )
            )
            ids, _ = rec()
            ref = results.get("cython", next(iter(results.values()), None))
            if ref is not None:
                agree = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, ref[0])])
                print(
                    f"{n_items} items: implicit's top-10 sets agree with fastrec's on "
                    f"{agree:.4f} of entries"
                )
        except ImportError as exc:
            rows.append((n_items, f"implicit: not installed ({exc})", None))
        sub = 5000

        def numpy_rows():
            for r0 in range(0, sub, 4096):
                r1 = min(sub, r0 + 4096)
                S = Q[r0:r1] @ X.T
                block = seen[r0:r1]
                S[np.repeat(np.arange(r1 - r0), np.diff(block.indptr)), block.indices] = -np.inf
                part = np.argpartition(-S, K, axis=1)[:, :K]
                vals = np.take_along_axis(S, part, axis=1)
                np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)

        with threadpool_limits(T, user_api="blas"):
            t = median_time(numpy_rows, args.repeat) * N_USERS / sub
        rows.append(
            (
                n_items,
                f"NumPy: blocked product, seen -inf, argpartition + sort "
                f"({sub} users timed, x{N_USERS // sub})",
                t,
            )
        )
    print(f"\n{'items':>7}  {'time s':>8}  {'BLAS/row':>8}  what")
    floors = {n: t for n, what, t in rows if what.startswith("BLAS")}
    for n, what, t in rows:
        ratio = f"{floors[n] / t:.2f}" if t else "-"
        ts = f"{t:.2f}" if t else "-"
        print(f"{n:>7}  {ts:>8}  {ratio:>8}  {what}")


if __name__ == "__main__":
    main()
