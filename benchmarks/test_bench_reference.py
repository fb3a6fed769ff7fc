"""Timings of the NumPy reference kernels: the baseline every speed-up is measured against.

    python -m pytest benchmarks/test_bench_reference.py --benchmark-only \\
        --benchmark-columns=median,min,max,rounds

Sizes follow the issues: cosine top-k on the item x user matrix of the small and mid sets
(k=100), dense top-k 4096 x 100,000 float32 (k=100), recommend top-10 for 5,000 users of mid,
sigmoid on 2,000,000 x 64 float32 and on a 500,000 x 2^20 CSR with 40 non-zeros per row,
loss/gradient on 100,000 x 100 float64.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from datasets import interactions

import fastrec

pytestmark = pytest.mark.benchmark(group="reference", min_rounds=1, warmup=False)


@pytest.fixture(scope="module")
def mid():
    return interactions("mid")


def _median3(benchmark, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=3, iterations=1)


@pytest.mark.parametrize("size", ["small", "mid"])
def test_cosine_topk(benchmark, size):
    item_users = interactions(size).T.tocsr()
    S = _median3(benchmark, fastrec.cosine_topk, item_users, 100, backend="numpy")
    assert S.shape[0] == item_users.shape[0]


def test_topk_dense(benchmark):
    scores = np.random.default_rng(0).random((4096, 100_000), dtype=np.float32)
    out = _median3(benchmark, fastrec.topk, scores, 100, backend="numpy")
    assert out.indices.shape == (4096, 100)


def test_recommend(benchmark, mid):
    item_users = mid.T.tocsr()
    neighbours = fastrec.cosine_topk(item_users, 100)  # fastest available backend
    users = np.arange(5000)
    out = _median3(
        benchmark, fastrec.recommend, mid, neighbours, 10, user_ids=users, backend="numpy"
    )
    assert out.indices.shape == (5000, 10)


def test_sigmoid_dense(benchmark):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2_000_000, 64), dtype=np.float32)
    w = rng.standard_normal(64).astype(np.float32)
    _median3(benchmark, fastrec.sigmoid_scores, X, w, 0.1, backend="numpy")


def test_sigmoid_csr(benchmark):
    rng = np.random.default_rng(0)
    n, m, per_row = 500_000, 1 << 20, 40
    indices = np.sort(rng.integers(0, m, (n, per_row)), axis=1).ravel().astype(np.int32)
    X = sp.csr_matrix(
        (np.ones(n * per_row, np.float32), indices, np.arange(0, n * per_row + 1, per_row)),
        shape=(n, m),
    )
    w = rng.standard_normal(m).astype(np.float32)
    _median3(benchmark, fastrec.sigmoid_scores, X, w, 0.1, backend="numpy")


def test_logistic_loss_grad(benchmark):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100_000, 100))
    y = (rng.random(100_000) < 0.3).astype(float)
    _median3(
        benchmark,
        fastrec.logistic_loss_grad,
        X,
        y,
        rng.standard_normal(100),
        0.0,
        l2=1e-3,
        backend="numpy",
    )
