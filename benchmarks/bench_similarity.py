"""Cosine top-k: fastrec's backends against implicit, sparse_dot_topn and scikit-learn, each case
in a fresh subprocess so that its peak RSS (ru_maxrss) is its own.

    python benchmarks/bench_similarity.py --sizes mid --ks 20 100 --threads 1 2 --rounds 3

Prints a Markdown table: median seconds over ``rounds`` (after one warm-up call on a few rows),
peak RSS of the process (data loaded, imports done, the call included), and throughput W/s
with W = sum over users of (items of that user)^2. BLAS is held to one thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from threadpoolctl import threadpool_limits
import datasets, similarity_cases as sc
name, size = sys.argv[1], sys.argv[2]
k, threads, rounds = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ui = datasets.interactions(size)
X = sc.item_users(ui)
run = sc.CASES[name]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
times = []
with threadpool_limits(limits=1, user_api="blas"):
    run(X[:200], k, threads)  # warm-up: JIT compilation / caches, on 200 rows
    for _ in range(rounds):
        t = time.perf_counter()
        S = run(X, k, threads)
        times.append(time.perf_counter() - t)
        del S
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(seconds=times, peak_rss=peak, data_rss=base, W=datasets.work(ui))))
"""


_INTERLEAVED = """
import json, sys, time
sys.path.insert(0, {here!r})
from threadpoolctl import threadpool_limits
import datasets, similarity_cases as sc
size, k, threads, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = sys.argv[5:]
ui = datasets.interactions(size)
X = sc.item_users(ui)
times = {{name: [] for name in names}}
with threadpool_limits(limits=1, user_api="blas"):
    for name in names:
        sc.CASES[name](X[:200], k, threads)
    for _ in range(rounds):
        for name in names:  # round-robin: a burst of load on the machine hits every case
            t = time.perf_counter()
            S = sc.CASES[name](X, k, threads)
            times[name].append(time.perf_counter() - t)
            del S
print(json.dumps(dict(times=times, W=datasets.work(ui))))
"""


def run_interleaved(names, size, k, threads, rounds, timeout):
    """Seconds of every case, run round-robin in one process (no RSS: see run_case)."""
    code = _INTERLEAVED.format(here=str(HERE))
    out = subprocess.run(
        [sys.executable, "-c", code, size, str(k), str(threads), str(rounds), *names],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(name, size, k, threads, rounds, timeout):
    code = _CHILD.format(here=str(HERE))
    out = subprocess.run(
        [sys.executable, "-c", code, name, size, str(k), str(threads), str(rounds)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        return dict(error=out.stderr.strip().splitlines()[-1] if out.stderr else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    sys.path.insert(0, str(HERE))
    import similarity_cases as sc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["mid"])
    p.add_argument("--ks", nargs="+", type=int, default=[20, 100])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--cases", nargs="+", default=list(sc.CASES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--json", type=Path, help="append raw results here (one JSON per line)")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="time the cases round-robin in one process (fairer ratios on a busy machine; no RSS)",
    )
    args = p.parse_args(argv)
    if args.interleave:
        print("| size | k | threads | case | median s | min s | ratio to fastest library | W/s |")
        print("|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            for k in args.ks:
                for threads in args.threads:
                    res = run_interleaved(args.cases, size, k, threads, args.rounds, args.timeout)
                    med = {n: sorted(t)[len(t) // 2] for n, t in res["times"].items()}
                    libs = [med[n] for n in med if n.startswith(("implicit", "sparse_dot"))]
                    best = min(libs) if libs else float("nan")
                    for n, t in res["times"].items():
                        print(
                            f"| {size} | {k} | {threads} | {n} | {med[n]:.2f} | {min(t):.2f} | "
                            f"{med[n] / best:.2f} | {res['W'] / med[n]:.3g} |",
                            flush=True,
                        )
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(
                                json.dumps(
                                    dict(size=size, k=k, threads=threads, interleaved=True, **res)
                                )
                                + "\n"
                            )
        return
    print("| size | k | threads | case | median s | min s | peak RSS MB | W/s |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for k in args.ks:
            for threads in args.threads:
                for name in args.cases:
                    # Single-threaded whatever is asked: run those once, at threads=1.
                    if name in ("sklearn-blocked", "numpy-reference") and threads != 1:
                        continue
                    rounds = 1 if name in ("sklearn-blocked", "numpy-reference") else args.rounds
                    res = run_case(name, size, k, threads, rounds, args.timeout)
                    if "error" in res:
                        print(f"| {size} | {k} | {threads} | {name} | error: {res['error']} |")
                        continue
                    ts = sorted(res["seconds"])
                    med = ts[len(ts) // 2]
                    print(
                        f"| {size} | {k} | {threads} | {name} | {med:.2f} | {ts[0]:.2f} | "
                        f"{res['peak_rss'] / 2**20:.0f} | {res['W'] / med:.3g} |",
                        flush=True,
                    )
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(
                                json.dumps(dict(size=size, k=k, threads=threads, case=name, **res))
                                + "\n"
                            )


if __name__ == "__main__":
    main()
