"""Cosine top-k of every item of the item x user matrix (user_items.T): fastrec's backends
against the NumPy reference, implicit, sparse_dot_topn and scikit-learn, same data, same run.

    python -m pytest benchmarks/test_bench_similarity.py --benchmark-only -k mid \\
        --benchmark-columns=median,min,max,rounds \\
        --benchmark-group-by=param:size,param:k,param:threads

Peak RSS per case (each in its own process): ``python benchmarks/bench_similarity.py``.
The large set is slow for the libraries (tens of seconds a call): select it with ``-k large``.
"""

import pytest
from datasets import interactions, work
from similarity_cases import CASES, item_users

pytestmark = pytest.mark.benchmark(group="cosine_topk", min_rounds=1, warmup=False)

_SINGLE = ("numpy-reference", "sklearn-blocked")  # single-threaded whatever is asked


@pytest.fixture(scope="module", params=["mid", "large"])
def size(request):
    return request.param


@pytest.fixture(scope="module")
def data(size):
    ui = interactions(size)
    return item_users(ui), work(ui)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [20, 100])
@pytest.mark.parametrize("case", list(CASES))
def test_cosine_topk(benchmark, data, size, case, k, threads):
    if case in _SINGLE and threads != 1:
        pytest.skip("single-threaded")
    if case == "numpy-reference" and size == "large":
        pytest.skip("minutes per call")
    X, W = data
    run = CASES[case]
    run(X[:200], k, threads)  # JIT compilation and caches outside the timing
    rounds = 1 if case in _SINGLE else 3
    S = benchmark.pedantic(run, args=(X, k, threads), rounds=rounds, iterations=1)
    benchmark.extra_info["W_per_s"] = W / benchmark.stats.stats.median
    assert S.shape == (X.shape[0], X.shape[0])
