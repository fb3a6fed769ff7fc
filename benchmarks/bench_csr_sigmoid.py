"""CSR sigmoid scoring against SciPy and the in-run floor, with where the time goes.

    python benchmarks/bench_csr_sigmoid.py [--rows 2000000] [--rounds 7] [--threads 1 2]

The shipped case (``fastrec.bench.cases``: rows x 2^20 float32, 40 hashed columns per row,
canonical and not), 1 and 2 threads. Every implementation runs once per round, rounds
interleaved, so that a shared machine's load falls on all of them alike; medians, and ratios
within this run only. Rows:

- floor: a parallel read of indices + data on the same threads (what streaming X costs);
- scipy: ``expit(X @ w + b)`` (the peer; SciPy's product runs on one thread);
- fastrec numba / cython: ``fastrec.sigmoid_scores`` (validation included);
- with ``--breakdown``, the raw Numba kernel in each CSR dot form, its logits without the
  sigmoid, and the same matrix with every column folded into the first 4096 (w in L1: the
  compute alone; the difference to the full run is the cost of gathering w from L2/L3).
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
from fastrec.bench.cases import _csr_problem
from fastrec.kernels import form_choice
from fastrec.kernels.numba_cpu import scoring as nb
from fastrec.kernels.numba_cpu._common import threads as numba_threads
from fastrec.kernels.numba_cpu._common import unsigned


def _cases(X, w, threads, breakdown):
    out = np.empty(X.shape[0], dtype=np.float32)
    b = np.float32(0.1)
    cases = {
        "floor (read indices+data)": parallel_read([X.indices, X.data], threads),
        "scipy expit(X @ w + b)": lambda: scipy.special.expit(X @ w + b),
    }
    for backend in ("numba", "cython"):
        if backend in fastrec.available_backends("sigmoid_csr"):
            cases[f"fastrec {backend}"] = lambda be=backend: fastrec.sigmoid_scores(
                X, w, 0.1, out=out, backend=be, n_threads=threads
            )
    if breakdown:
        ip, ix = unsigned(X.indptr), unsigned(X.indices)
        ix_l1 = ix & ix.dtype.type(4095)
        z = np.empty(X.shape[0])

        def raw(indices, gather, logits_only=False):
            def run():
                with numba_threads(threads):
                    if logits_only:
                        _logits(ip, indices, X.data, w, z, gather)
                    else:
                        nb._sigmoid_csr(ip, indices, X.data, w, 0.1, out, True, gather)

            return run

        for form in nb.CSR_DOT_FORMS:
            gather = form == "gather"
            cases[f"numba kernel, {form}"] = raw(ix, gather)
            cases[f"numba kernel, {form}, logits only"] = raw(ix, gather, logits_only=True)
            cases[f"numba kernel, {form}, w in L1 (4096 columns)"] = raw(ix_l1, gather)
    return cases


@numba.njit(parallel=True, cache=True)
def _logits(indptr, indices, data, w, z, gather):
    for i in numba.prange(indptr.shape[0] - 1):
        z[i] = nb._row_dot(indices, data, w, indptr[i], indptr[i + 1], gather)


def _load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kinds", nargs="+", default=["canonical", "hashed"])
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"CPU: {form_choice.cpu_description()}; numba {numba.__version__}, "
        f"csr_dot form {form_choice.csr_dot_form()}"
    )
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {_load():.2f}")
    for kind in args.kinds:
        X, w = _csr_problem(args.rows, 1, kind == "canonical")
        for threads in args.threads:
            cases = _cases(X, w, threads, args.breakdown)
            with threadpool_limits(limits=threads):
                for fn in cases.values():
                    fn()  # compile, warm
                times = {name: [] for name in cases}
                load0 = _load()
                for _ in range(args.rounds):
                    for name, fn in cases.items():
                        t0 = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - t0)
            med = {name: float(np.median(t)) for name, t in times.items()}
            peer = med["scipy expit(X @ w + b)"]
            floor = med["floor (read indices+data)"]
            print(
                f"\n{X.shape[0]} x 2^20, {X.nnz / X.shape[0]:.1f} nnz/row, {kind}"
                f"{' (not canonical)' if not X.has_canonical_format else ''}, "
                f"{threads} thread(s), load average {load0:.2f} -> {_load():.2f}, "
                f"medians of {args.rounds}"
            )
            print("| implementation | median ms | scipy / this | floor / this |")
            print("|---|---|---|---|")
            for name in cases:
                print(
                    f"| {name} | {med[name] * 1e3:.1f} | {peer / med[name]:.2f}x | "
                    f"{floor / med[name]:.2f} |"
                )
        del X


if __name__ == "__main__":
    main()
