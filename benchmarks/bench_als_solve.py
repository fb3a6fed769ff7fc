"""The ALS CG half-step kernel per backend and build: what AUTO_ORDER["als_cg_update"] follows.

    python benchmarks/bench_als_solve.py [--users 20000] [--items 5000] [--density 0.01]
        [--factors 64] [--cg-steps 3] [--threads 2] [--repeat 5]

One user half-step (``als_cg_update`` on the users x items matrix, counts 1..4) per kernel:
every Cython build the CPU runs (base ISA, AVX2, AVX-512; "cython" picks the widest) and
Numba, interleaved, medians; ratios against Numba from the same run, and the largest relative
difference of each result from Numba's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dot_topk import cpu_name

from fastrec.kernels import numba_cpu


def kernels():
    out = {}
    try:
        from fastrec.kernels._cython import _als
    except ImportError:
        pass
    else:
        builds = ["base", "avx2", "avx512"]
        for isa in builds[: 1 + builds.index(_als.cpu_isa())]:
            name = "_als" if isa == "base" else f"_als_{isa}"
            module = __import__(f"fastrec.kernels._cython.{name}", fromlist=["als_cg_update"])
            out[f"cython ({isa})"] = module.als_cg_update
    out["numba"] = numba_cpu.als_cg_update
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    UI = sp.random(
        args.users, args.items, density=args.density, format="csr", random_state=rng
    ).astype(np.float32)
    UI.data = np.ceil(UI.data * 4)
    f = args.factors
    X = (rng.random((args.users, f)) * 0.1).astype(np.float32)
    Y = (rng.random((args.items, f)) * 0.1).astype(np.float32)
    Y64 = Y.astype(np.float64)
    YtY = Y64.T @ Y64 + 0.01 * np.eye(f)
    call = (UI.indptr, UI.indices, UI.data, X, Y, YtY, 1.0, args.cg_steps, args.threads)
    fns = kernels()
    print(
        f"CPU: {cpu_name()}; {args.threads} threads; {UI.shape} nnz {UI.nnz}; {f} float32 "
        f"factors; {args.cg_steps} CG steps; medians of {args.repeat}"
    )
    times = {name: [] for name in fns}
    with threadpool_limits(1, user_api="blas"):
        results = {name: fn(*call) for name, fn in fns.items()}  # also compiles Numba
        for _ in range(args.repeat):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(*call)
                times[name].append(time.perf_counter() - t0)
    ref = results["numba"].astype(np.float64)
    base = statistics.median(times["numba"])
    print(f"\n{'':16} {'s/half-step':>12} {'numba/this':>11} {'max rel diff':>13}")
    for name, ts in times.items():
        t = statistics.median(ts)
        diff = np.abs(results[name] - ref).max() / max(np.abs(ref).max(), 1e-300)
        print(f"{name:16} {t:12.4f} {base / t:11.2f} {diff:13.1e}")


if __name__ == "__main__":
    main()
