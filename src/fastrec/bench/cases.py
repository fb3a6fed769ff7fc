"""The benchmark cases shipped with fastrec: problems of a chosen size, fastrec's call, the peers
that are installed, and the read floor, each built only when its case runs.

A case factory takes (size dict, n_threads) and returns a :class:`Case`. Peers: NumPy and SciPy
always; scikit-learn, implicit and sparse_dot_topn when importable (faiss has no case yet: its
exact search is a dense product, not one of these kernels).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.special

import fastrec

from ._floor import parallel_read

SIZES = {
    # tiny: the test suite's smoke run; small: --quick (under two minutes on 2 cores);
    # medium: the shapes of benchmarks/README.md and issue 18.
    "tiny": dict(
        dense_rows=20_000,
        csr_rows=20_000,
        topk_rows=64,
        topk_cols=20_000,
        ctr_events=3_000,
        ctr_features=2**12,
        knn_users=2_000,
        knn_items=1_000,
    ),
    "small": dict(
        dense_rows=500_000,
        csr_rows=500_000,
        topk_rows=512,
        topk_cols=50_000,
        ctr_events=20_000,
        ctr_features=2**16,
        knn_users=10_000,
        knn_items=3_000,
    ),
    "medium": dict(
        dense_rows=2_000_000,
        csr_rows=2_000_000,
        topk_rows=4096,
        topk_cols=100_000,
        ctr_events=100_000,
        ctr_features=2**20,
        knn_users=100_000,
        knn_items=20_000,
    ),
}
CSR_COLS, CSR_PER_ROW, DENSE_COLS, TOPK_K, KNN_K = 2**20, 40, 64, 100, 50


@dataclass
class Case:
    """One benchmark: implementations by name (the first is fastrec's), the one the speed-up is
    measured against, and the read floor (None where the kernel is not read-bound)."""

    title: str
    impls: dict[str, Callable[[], object]]
    baseline: str
    floor: Callable[[], object] | None = None
    notes: list[str] = field(default_factory=list)


def peer_versions() -> dict[str, str | None]:
    """Installed version of each optional peer (None when it is not installed)."""
    out = {}
    for name, module in (
        ("scikit-learn", "sklearn"),
        ("implicit", "implicit"),
        ("sparse_dot_topn", "sparse_dot_topn"),
        ("faiss", "faiss"),
    ):
        try:
            out[name] = getattr(importlib.import_module(module), "__version__", "?")
        except Exception:  # any import failure: the peer is absent here
            out[name] = None
    return out


def _csr_problem(n_rows, seed, canonical):
    """n_rows x 2^20 float32 CSR, 40 hashed columns per row; with ``canonical=False`` the
    columns are left as drawn (unsorted, a few duplicates), as a hashing encoder leaves them."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, CSR_COLS, size=(n_rows, CSR_PER_ROW), dtype=np.int32)
    data = rng.random(n_rows * CSR_PER_ROW, dtype=np.float32)
    indptr = np.arange(0, n_rows * CSR_PER_ROW + 1, CSR_PER_ROW, dtype=np.int32)
    X = sp.csr_matrix((data, indices.ravel(), indptr), shape=(n_rows, CSR_COLS))
    if canonical:
        X.sum_duplicates()  # sorts each row; the rare duplicate column is summed
    w = (rng.standard_normal(CSR_COLS) * 0.1).astype(np.float32)
    return X, w


def sigmoid_csr(size, n_threads, canonical=True):
    X, w = _csr_problem(size["csr_rows"], 1, canonical)
    kind = "canonical" if X.has_canonical_format else "hashed, not canonical"
    out = np.empty(X.shape[0], dtype=np.float32)
    return Case(
        f"sigmoid_scores CSR {X.shape[0]}x2^20 float32, {CSR_PER_ROW} nnz/row ({kind})",
        {
            "fastrec": lambda: fastrec.sigmoid_scores(X, w, 0.1, out=out, n_threads=n_threads),
            "scipy": lambda: scipy.special.expit(X @ w + np.float32(0.1)),
        },
        baseline="scipy",
        floor=parallel_read([X.indices, X.data], n_threads),
    )


def sigmoid_dense(size, n_threads):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((size["dense_rows"], DENSE_COLS), dtype=np.float32)
    w = rng.standard_normal(DENSE_COLS).astype(np.float32) * 0.1
    out = np.empty(X.shape[0], dtype=np.float32)
    return Case(
        f"sigmoid_scores dense {X.shape[0]}x{DENSE_COLS} float32",
        {
            "fastrec": lambda: fastrec.sigmoid_scores(X, w, 0.1, out=out, n_threads=n_threads),
            "numpy": lambda: scipy.special.expit(X @ w + np.float32(0.1)),
        },
        baseline="numpy",
        floor=parallel_read([X], n_threads),
    )


def _numpy_topk(S, k):
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # score descending, ties by smaller column
    return np.take_along_axis(part, order, axis=1)


def topk(size, n_threads):
    rng = np.random.default_rng(3)
    S = rng.random((size["topk_rows"], size["topk_cols"]), dtype=np.float32)
    return Case(
        f"topk k={TOPK_K} of {S.shape[0]}x{S.shape[1]} float32",
        {
            "fastrec": lambda: fastrec.topk(S, TOPK_K, n_threads=n_threads),
            "numpy": lambda: _numpy_topk(S, TOPK_K),
        },
        baseline="numpy",
        floor=parallel_read([S], n_threads),
    )


def _user_items(size, seed=4):
    rng = np.random.default_rng(seed)
    n_users, n_items = size["knn_users"], size["knn_items"]
    per_user = 30
    rows = np.repeat(np.arange(n_users), per_user)
    cols = np.minimum(rng.zipf(1.3, rows.size) - 1, n_items - 1)
    X = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def cosine_topk(size, n_threads):
    user_items = _user_items(size)
    item_users = user_items.T.tocsr()
    impls = {
        "fastrec": lambda: fastrec.cosine_topk(item_users, KNN_K, n_threads=n_threads),
        "numpy reference": lambda: fastrec.cosine_topk(item_users, KNN_K, backend="numpy"),
    }
    notes = []
    try:
        from sparse_dot_topn import sp_matmul_topn

        norms = np.sqrt(np.asarray(item_users.multiply(item_users).sum(axis=1)).ravel())
        A = sp.diags(1.0 / np.maximum(norms, 1e-30)).astype(np.float32) @ item_users
        A = A.tocsr()
        AT = A.T.tocsr()
        impls["sparse_dot_topn"] = lambda: sp_matmul_topn(
            A, AT, top_n=KNN_K, sort=True, n_threads=n_threads
        )
    except ImportError:
        notes.append("sparse_dot_topn not installed")
    try:
        from implicit.nearest_neighbours import CosineRecommender

        impls["implicit"] = lambda: CosineRecommender(K=KNN_K, num_threads=n_threads).fit(
            user_items, show_progress=False
        )
    except ImportError:
        notes.append("implicit not installed")
    return Case(
        f"cosine_topk k={KNN_K}: item-item over {user_items.shape[0]} users x "
        f"{user_items.shape[1]} items, {user_items.nnz} events",
        impls,
        baseline="numpy reference",
        notes=notes,
    )


def ctr_fit(size, n_threads):
    """LogisticCTR(C=1) on hashed user/item/hour events of MovieLens-100k's shape."""
    from fastrec.features import HashingEncoder
    from fastrec.models import LogisticCTR

    rng = np.random.default_rng(5)
    n = size["ctr_events"]
    users = np.minimum(rng.zipf(1.2, n) - 1, 942)
    items = np.minimum(rng.zipf(1.1, n) - 1, 1681)
    hours = rng.integers(0, 24, n)
    logit = (
        rng.standard_normal(943)[users] * 0.5
        + rng.standard_normal(1682)[items] * 0.7
        + rng.standard_normal(24)[hours] * 0.2
        - 0.2
    )
    y = (rng.random(n) < scipy.special.expit(logit)).astype(np.int64)
    X = HashingEncoder(
        ["user", "item", "hour"], n_features=size["ctr_features"], seed=0, dtype=np.float64
    ).fit_transform({"user": users, "item": items, "hour": hours})

    def quiet(fn):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # max_iter reached is the same for all here
                return fn()

        return run

    impls = {
        "fastrec lbfgs": quiet(lambda: LogisticCTR(C=1.0, n_threads=n_threads).fit(X, y)),
        "fastrec trust-ncg": quiet(
            lambda: LogisticCTR(C=1.0, solver="trust-ncg", tol=1e-8, n_threads=n_threads).fit(X, y)
        ),
    }
    notes, baseline = [], "fastrec lbfgs"
    try:
        from sklearn.linear_model import LogisticRegression

        impls["scikit-learn lbfgs"] = quiet(lambda: LogisticRegression(C=1.0).fit(X, y))
        baseline = "scikit-learn lbfgs"
    except ImportError:
        notes.append("scikit-learn not installed")
    return Case(
        f"LogisticCTR fit: {n} hashed user/item/hour events, {X.shape[1]} columns "
        f"({np.unique(X.indices).size} occur)",
        impls,
        baseline=baseline,
        notes=notes,
    )


CASES: dict[str, Callable[[dict, int], Case]] = {
    "sigmoid_dense": sigmoid_dense,
    "sigmoid_csr": sigmoid_csr,
    "sigmoid_csr_hashed": lambda size, n_threads: sigmoid_csr(size, n_threads, canonical=False),
    "topk": topk,
    "cosine_topk": cosine_topk,
    "ctr_fit": ctr_fit,
}
