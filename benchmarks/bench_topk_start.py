"""topk's bounded start against a start from -inf, per backend, row form, k and row length.

    python benchmarks/bench_topk_start.py [--rounds 5] [--threads 1 2]

Every compiled CPU backend and float32 row form (compress, walk; ``topk_forms.float32_form``)
and float64, on 400 MB of scores in rows of 25k and 100k columns, k = 16, 32 and 100: the
same call with the rows' block-maxima bound switched on and off (``_set_bound``), interleaved
with the read of the same array and thread count in each round. Prints medians of the
fractions of that read (higher is better), from -inf -> bound.
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np

import fastrec
from fastrec.bench._floor import parallel_read
from fastrec.kernels import form_choice, topk_forms

SWITCH = {"cython": "fastrec.kernels._cython._topk", "numba": "fastrec.kernels.numba_cpu.topk"}


def _forms(backend, dtype):
    if dtype == np.float64:
        return [None]
    return [c for c in (True, False) if not c or topk_forms.compress_available(backend)]


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    arrays = {}
    for dtype in (np.float32, np.float64):
        for n_cols in (25_000, 100_000):
            n_rows = (400 << 20) // (n_cols * np.dtype(dtype).itemsize)
            arrays[dtype, n_cols] = rng.random((n_rows, n_cols)).astype(dtype)
    print(f"CPU: {form_choice.cpu_description()}; {time.strftime('%Y-%m-%d %H:%M UTC')}")
    print("| backend | form | k | columns | " + " | ".join(f"{t} thr" for t in args.threads))
    print("|---|---|---|---|" + "---|" * len(args.threads))
    for backend in [b for b in SWITCH if b in fastrec.available_backends()]:
        switch = importlib.import_module(SWITCH[backend])
        for (dtype, n_cols), S in arrays.items():
            for compress in _forms(backend, dtype):
                form = "float64" if compress is None else "compress" if compress else "walk"
                for k in (16, 32, 100):
                    cells = []
                    for t in args.threads:
                        read = parallel_read([S], t)

                        def call(on, t=t, k=k, S=S, compress=compress):
                            previous = switch._set_bound(on)
                            try:
                                if compress is None:
                                    fastrec.topk(S, k, backend=backend, n_threads=t)
                                else:
                                    with topk_forms.float32_form(backend, compress):
                                        fastrec.topk(S, k, backend=backend, n_threads=t)
                            finally:
                                switch._set_bound(previous)

                        read(), call(False), call(True)  # compile, warm
                        f = {False: [], True: []}
                        for _ in range(args.rounds):
                            r = _time(read)
                            for on in (False, True):
                                f[on].append(r / _time(lambda on=on: call(on)))
                        cells.append(f"{np.median(f[False]):.2f} -> {np.median(f[True]):.2f}")
                    print(f"| {backend} | {form} | {k} | {n_cols:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
