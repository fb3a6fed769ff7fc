"""The feedback loop on the mid set: ItemKNN partial_fit against a full refit, and the latency
of one request for a user unseen at fit time.

    python benchmarks/bench_feedback.py --size mid --shares 0.001 0.01 0.1 --threads 2

Events get a seeded random order (the benchmark matrix has no times); the newest ``share`` of
them are appended in one batch. For each share: the median seconds of a full ``fit`` on all
events and of ``partial_fit`` (forced onto the partial path, to measure it) from a model fit on
the older events (with ``--reserve`` extra neighbours kept per row), whether the two
neighbourhoods are bit-identical, the changed rows' share of
a full fit's work (what partial_fit's automatic choice reads) and the path it would take.
Latency: ``recommend(user_items=row, n=10)`` of one unseen user with 20 interactions (items
drawn like the data's events), single thread, over ``--requests`` calls, with the fused kernel
through the public :func:`fastrec.recommend_product` beside it (which validates the whole
neighbourhood on every call; the model validates it once per fitted state). BLAS is held to one
thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
import datasets

from fastrec import recommend_product
from fastrec.models import ALS, ItemKNN, _incremental


def split(M, share, seed=0):
    """(older, all) matrices of the same shape: the newest ``share`` of entries removed."""
    rng = np.random.default_rng(seed)
    rank = rng.permutation(M.nnz)
    keep = rank < round(M.nnz * (1 - share))
    rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
    old = sp.csr_matrix((M.data[keep], (rows[keep], M.indices[keep])), shape=M.shape)
    return old, M


def timed(fn, rounds):
    out, times = None, []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def partial_fit_table(M, shares, k, threads, rounds, reserve):
    rows = []
    full, t_full = timed(lambda: ItemKNN(k=k, n_threads=threads).fit(M), rounds)
    for share in shares:
        old, grown = split(M, share)
        share_before = _incremental.FULL_FIT_WORK_SHARE
        _incremental.FULL_FIT_WORK_SHARE = float("inf")
        try:
            times = []
            for _ in range(rounds):
                model = ItemKNN(k=k, reserve=reserve, n_threads=threads).fit(old)
                t = time.perf_counter()
                model.partial_fit(grown)
                times.append(time.perf_counter() - t)
        finally:
            _incremental.FULL_FIT_WORK_SHARE = share_before
        a, b = model.neighbours_, full.neighbours_
        same = bool(
            np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data)
        )
        stats = model.partial_fit_stats_
        rows.append(
            dict(
                share=share,
                full_s=t_full,
                partial_s=float(np.median(times)),
                speedup=t_full / float(np.median(times)),
                identical=same,
                work_share=stats["work_share"],
                changed_rows=stats["changed_rows"],
                merged_rows=stats["merged_rows"],
                recomputed_rows=stats["recomputed_rows"],
                auto_path="partial" if stats["work_share"] <= share_before else "full",
            )
        )
    return rows


def latency(M, k, n_requests, seed=1, als_iterations=3):
    model = ItemKNN(k=k, n_threads=1).fit(M)
    # Latency does not depend on how converged the factors are: a few sweeps.
    als = ALS(factors=64, iterations=als_iterations, n_threads=1).fit(M)
    rng = np.random.default_rng(seed)
    # 20 distinct items drawn like the events (popular items more often), one user per request
    requests = []
    for _ in range(64):
        items = np.unique(M.indices[rng.integers(0, M.nnz, 40)])[:20]
        requests.append(
            sp.csr_matrix(
                (np.ones(len(items), M.dtype), (np.zeros(len(items), np.int64), items)),
                shape=(1, M.shape[1]),
            )
        )
    for R in requests[:8]:  # warm-up: compilation, caches
        model.recommend(user_items=R, n=10)
        als.recommend(user_items=R, n=10)
    out = {}
    calls = {
        "ItemKNN.recommend(user_items=row)": lambda R: model.recommend(user_items=R, n=10),
        "ALS(64 factors).recommend(user_items=row)": lambda R: als.recommend(user_items=R, n=10),
        # validates the neighbourhood on every call
        "public recommend_product(row, neighbours)": lambda R: recommend_product(
            R, model.neighbours_, 10, seen=R, n_threads=1
        ),
    }
    for name, call in calls.items():
        times = np.empty(n_requests)
        for i in range(n_requests):
            R = requests[i % len(requests)]
            t = time.perf_counter()
            call(R)
            times[i] = time.perf_counter() - t
        out[name] = dict(
            median_ms=1e3 * float(np.median(times)), p99_ms=1e3 * float(np.percentile(times, 99))
        )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="mid")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--reserve", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--skip-partial", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    M = datasets.interactions(args.size)
    with threadpool_limits(limits=1, user_api="blas"):
        result = {
            "size": args.size,
            "shape": M.shape,
            "nnz": int(M.nnz),
            "k": args.k,
            "reserve": args.reserve,
        }
        if not args.skip_partial:
            result["partial_fit"] = partial_fit_table(
                M, args.shares, args.k, args.threads, args.rounds, args.reserve
            )
        if not args.skip_latency:
            result["latency"] = latency(M, args.k, args.requests)
    print(json.dumps(result, indent=1))
    if "partial_fit" in result:
        print(
            "\n| newest events | full fit s | partial_fit s | speedup | identical | "
            "work share | changed / merged / recomputed rows | auto path |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in result["partial_fit"]:
            print(
                f"| {r['share']:.1%} | {r['full_s']:.2f} | {r['partial_s']:.2f} | "
                f"{r['speedup']:.2f}x | {r['identical']} | {r['work_share']:.0%} | "
                f"{r['changed_rows']} / {r['merged_rows']} / {r['recomputed_rows']} | "
                f"{r['auto_path']} |"
            )
    print("\n| call (1 thread) | median ms | p99 ms |\n|---|---|---|")
    for name, v in result.get("latency", {}).items():
        print(f"| {name} | {v['median_ms']:.3f} | {v['p99_ms']:.3f} |")


if __name__ == "__main__":
    main()
