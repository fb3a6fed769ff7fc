"""Compile the Numba backend's costly kernel specialisations into Numba's on-disk cache, in a
process that conftest.py starts beside the test run (``FASTREC_TEST_WARM_NUMBA=0`` turns it off).

On a fresh machine (CI) every specialisation of a ``parallel=True`` kernel takes 5-30 s to
compile, on the test run's critical path: ~40 % of the run. The test process itself is mostly
one busy core (the simulator's threads share the GIL), so this process compiles on the other,
and the tests then load the kernels from the cache (``cache=True``) instead of compiling them.
Only the time moves: the kernels, and the tests that run them, are the same. A specialisation
not listed here is compiled where it is first called, as before; one listed but no longer used
costs this process's time only. Calls go through the public API, so the types are those the
tests pass (float32/float64 values, int32/int64 indices, read-only arrays of mapped models);
order: roughly the order the test files need them.
"""

import os
from functools import partial

import numpy as np
import scipy.sparse as sp

import fastrec
import fastrec.similarity as similarity
from fastrec._validation import check_csr
from fastrec.embedding import als_cg_update
from fastrec.kernels import topk_forms


def _csr(n_rows, n_cols, itype, dtype, seed=1):
    M = sp.random(n_rows, n_cols, density=0.3, format="csr", random_state=seed, dtype=dtype)
    M.indptr, M.indices = M.indptr.astype(itype), M.indices.astype(itype)
    return M


def _read_only(M):
    M = M.copy()
    for a in (M.indptr, M.indices, M.data):
        a.flags.writeable = False
    return M


def _steps(rng):
    """Each step compiles a few specialisations; in the order the test files need them."""
    b = dict(backend="numba")
    types = [(it, dt) for it in (np.int32, np.int64) for dt in (np.float32, np.float64)]
    for it, dt in types:  # test_dask, test_dot_topk
        Q, X = rng.random((6, 4)).astype(dt), rng.random((9, 4)).astype(dt)
        yield partial(fastrec.dot_topk, Q, X, 3, exclude=_csr(6, 9, it, np.float64), **b)
    for it, dt in types:  # test_fork_safety, test_models_*, test_similarity_*, test_topk*
        UI = _csr(12, 10, it, dt)
        NB = _csr(10, 10, it, dt, seed=3)
        yield partial(fastrec.cosine_topk, UI, 4, **b)
        yield partial(fastrec.recommend, UI, NB, 3, **b)
        yield partial(fastrec.topk, rng.random((5, 40)).astype(dt), 4, **b)
        yield partial(
            fastrec.topk,
            rng.random((5, 40)).astype(dt),
            4,
            exclude=_csr(5, 40, it, np.float64),
            **b,
        )
    for dt in (np.float32, np.float64):  # the row blocks fastrec.dask computes
        X = check_csr(_csr(12, 10, np.int32, dt), "X", drop_zeros=True)  # indptr made int64
        P = similarity._prepare_similarity(X, None, "numba", 2)
        yield partial(similarity._cosine_similarity_block, P, 0, 12, 0.0, 1)
    for it in (np.int32, np.int64):  # the float32 form this CPU does not choose
        S, M = rng.random((5, 40)).astype(np.float32), _csr(5, 40, it, np.float64)
        for compress in (False, True):
            with topk_forms.float32_form("numba", compress):
                yield partial(fastrec.topk, S, 4, exclude=M, **b)
    UI, NB = _csr(12, 10, np.int32, np.float32), _csr(10, 10, np.int32, np.float32, seed=3)
    yield partial(fastrec.recommend, _read_only(UI), _read_only(NB), 3, **b)  # mapped models
    S = rng.random((5, 40))
    S.flags.writeable = False
    yield partial(fastrec.topk, S, 4, **b)
    for dt in (np.float32, np.float64):  # test_als (first in the run: likely compiled there)
        X, Y = rng.random((8, 3)).astype(dt), rng.random((6, 3)).astype(dt)
        yield partial(als_cg_update, _csr(8, 6, np.int32, np.float64), X, Y, **b)


def main():
    if hasattr(os, "nice"):
        os.nice(10)  # the test run comes first: this process takes what it leaves
    if "numba" not in fastrec.available_backends():
        return
    try:
        for step in _steps(np.random.default_rng(0)):
            try:
                step()
            except Exception:  # only a head start: the tests themselves report any error
                pass
    except Exception:
        pass


if __name__ == "__main__":
    main()
