"""ALS fit: fastrec.models.ALS against implicit 0.7's CG ALS at equal settings, one run.

    python benchmarks/bench_als.py [--size mid] [--iterations 5] [--repeat 2] [--threads 2]

Equal settings: factors 64, regularization 0.01, confidence c = 1 + alpha * r with alpha = 1
(implicit gets the matrix 1 + r and its alpha = 1.0, which is the same objective), 3 CG steps,
float32, the same number of iterations. Time per iteration = median fit time / iterations
(both libraries' own random starts; repeats interleaved). The objective is implicit's
``calculate_loss`` evaluated on both models' factors (and fastrec's ``als_loss`` as a
cross-check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets
from bench_dot_topk import cpu_name

from fastrec.models import ALS
from fastrec.models.als import als_loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mid", choices=list(datasets.SIZES))
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from implicit.cpu._als import calculate_loss
    from implicit.cpu.als import AlternatingLeastSquares

    UI = datasets.interactions(args.size).astype(np.float32)
    C = UI.copy()
    C.data = 1.0 + C.data  # implicit's confidence matrix for alpha = 1
    it, T, reg = args.iterations, args.threads, 0.01
    print(
        f"CPU: {cpu_name()}; {T} threads; {args.size} {UI.shape} nnz {UI.nnz}; "
        f"{it} iterations; medians of {args.repeat}"
    )
    # Interleaved repeats (fastrec, implicit, fastrec, ...): a shared machine's load drifts
    # over minutes and must weigh on both alike. A small fit first compiles Numba.
    ALS(factors=8, iterations=1, n_threads=T).fit(UI[:200])
    times = {"fastrec": [], "implicit": []}
    factors = {}
    for _ in range(args.repeat):
        for name in times:
            with threadpool_limits(1, user_api="blas") if name == "implicit" else _null():
                t0 = time.perf_counter()
                if name == "fastrec":
                    m = ALS(
                        factors=64,
                        regularization=reg,
                        alpha=1.0,
                        iterations=it,
                        cg_steps=3,
                        n_threads=T,
                    ).fit(UI)
                    factors[name] = m.user_factors_, m.item_factors_
                else:
                    m = AlternatingLeastSquares(
                        factors=64,
                        regularization=reg,
                        alpha=1.0,
                        iterations=it,
                        use_cg=True,
                        num_threads=T,
                        random_state=0,
                    )
                    m.fit(C, show_progress=False)
                    factors[name] = m.user_factors, m.item_factors
                times[name].append(time.perf_counter() - t0)
    rows = {}
    for name, (X, Y) in factors.items():
        loss = calculate_loss(C, X, Y, reg, num_threads=T)
        rows[name] = (statistics.median(times[name]) / it, loss, als_loss(UI, X, Y, reg, 1.0))
    print(f"\n{'':10} {'s/iteration':>12} {'implicit loss':>14} {'fastrec als_loss':>17}")
    for name, (t, loss, ours) in rows.items():
        print(f"{name:10} {t:12.3f} {loss:14.6g} {ours:17.6g}")
    f, i = rows["fastrec"], rows["implicit"]
    print(
        f"\nspeed-up per iteration {i[0] / f[0]:.2f}x; objective fastrec/implicit {f[1] / i[1]:.4f}"
    )


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
