"""Scenarios run in a fresh interpreter by test_fork_safety.py (each bounded by a timeout there).

``python _fork_scenarios.py os.fork BACKEND...``: run every public kernel with each BACKEND,
fork, run them again in the child (and in a grandchild), exit 0 only if every result has the
same bits. ``python _fork_scenarios.py mp METHOD...``: the same through a multiprocessing Pool
of each start METHOD, after the parent ran every backend.
"""

import multiprocessing
import os
import signal
import sys

import numpy as np
import scipy.sparse as sp

import fastrec

CHILD_SECONDS = 60  # SIGALRM ends a hung child: a regression fails instead of hanging CI


def _inputs():
    rng = np.random.default_rng(0)
    UI = sp.random(60, 40, density=0.2, format="csr", random_state=1, dtype=np.float64)
    S = rng.random((50, 300))
    X = rng.random((80, 6))
    y = (rng.random(80) < 0.4).astype(np.float64)
    w = rng.standard_normal(6)
    return UI, S, X, y, w


def run_all(backend):
    """Bytes of every public kernel's result with ``backend``."""
    UI, S, X, y, w = _inputs()
    nb = fastrec.cosine_topk(UI.T.tocsr(), 5, backend=backend)
    out = [
        fastrec.topk(S, 7, backend=backend),
        fastrec.topk(
            S.astype(np.float32),
            40,
            exclude=sp.random(50, 300, density=0.1, format="csr", random_state=2),
            backend=backend,
        ),
        nb,
        fastrec.cosine_similarity(UI, backend=backend),
        fastrec.recommend(UI, nb, 5, backend=backend),
        fastrec.recommend_user_based(
            UI, fastrec.cosine_topk(UI, 5, backend=backend), 5, backend=backend
        ),
        fastrec.sigmoid_scores(X, w, 0.5, backend=backend),
        fastrec.sigmoid_scores(sp.csr_matrix(X), w, 0.5, backend=backend),
        fastrec.logistic_loss_grad(X, y, w, 0.1, l2=0.01, backend=backend),
        fastrec.logistic_loss_grad(sp.csr_matrix(X), y, w, 0.1, backend=backend),
    ]
    parts = []
    for r in out:
        if sp.issparse(r):
            parts += [r.indptr.tobytes(), r.indices.tobytes(), r.data.tobytes()]
        elif isinstance(r, tuple):
            parts += [np.asarray(a).tobytes() for a in r]
        else:
            parts.append(np.asarray(r).tobytes())
    return b"".join(parts)


def _forked(fn):
    """fn() in a forked child (alarm-bounded); its exit status."""
    pid = os.fork()
    if pid == 0:
        signal.alarm(CHILD_SECONDS)
        try:
            code = fn()
        except BaseException as exc:
            print("child failed:", repr(exc), file=sys.stderr)
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def scenario_os_fork(backends):
    want = [run_all(b) for b in backends]

    def same():
        return 0 if [run_all(b) for b in backends] == want else 3

    def child():
        if same():
            return 3
        # A grandchild, forked from the child after it ran the kernels.
        return 0 if _forked(same) == 0 else 4

    status = _forked(child)
    print("child status", status)
    return 0 if status == 0 else 1


def _pool_task(backend):
    return run_all(backend)


def scenario_mp(methods):
    backends = [b for b in ("cython", "numba", "numpy") if b in fastrec.available_backends()]
    want = [run_all(b) for b in backends]
    for method in methods:
        with multiprocessing.get_context(method).Pool(1) as pool:
            got = pool.map_async(_pool_task, backends).get(timeout=CHILD_SECONDS * 2)
        if got != want:
            print(method, "gave other results", file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    sys.exit(scenario_os_fork(args) if kind == "os.fork" else scenario_mp(args))
