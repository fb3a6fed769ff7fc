"""Timings of the recommender models on the demo's synthetic data (6000 users x 2500 items),
per kernel backend, and implicit's CosineRecommender on the same data for comparison.

    python -m pytest benchmarks/test_bench_models.py --benchmark-only \\
        --benchmark-columns=median,min,max,rounds
    fastrec bench -k models        (the ratio table: numpy reference median / median)
"""

import numpy as np
import pytest

from fastrec import available_backends, data
from fastrec.models import ItemKNN, Popularity, UserKNN

pytestmark = pytest.mark.benchmark(group="models", min_rounds=1, warmup=False)

KERNELS = ("cosine_topk", "recommend", "topk")
BACKENDS = [
    b
    for b in available_backends()
    if b != "cuda" and all(b in available_backends(k) for k in KERNELS)
]
MODELS = {
    "itemknn": lambda b: ItemKNN(k=100, backend=b),
    "userknn": lambda b: UserKNN(k=50, backend=b),
    "popularity": lambda b: Popularity(backend=b),
}


@pytest.fixture(scope="module")
def demo_data():
    return data.synthetic().matrix


def _median3(benchmark, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=3, iterations=1)


# "implicit" in the backend column: implicit's CosineRecommender (K=101: it counts the item).
FIT_CASES = [(m, b) for m in sorted(MODELS) for b in BACKENDS] + [("itemknn", "implicit")]


@pytest.mark.parametrize("model, backend", FIT_CASES)
def test_models_fit(benchmark, demo_data, model, backend):
    if backend == "implicit":
        nn = pytest.importorskip("implicit.nearest_neighbours")
        X = demo_data.astype(np.float64)
        _median3(benchmark, lambda: nn.CosineRecommender(K=101).fit(X, show_progress=False))
        return
    _median3(benchmark, lambda: MODELS[model](backend).fit(demo_data))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_models_recommend_all_users(benchmark, demo_data, model, backend):
    fitted = MODELS[model](backend).fit(demo_data)
    users = np.arange(demo_data.shape[0])
    out = _median3(benchmark, fitted.recommend, users, 10)
    assert out.indices.shape == (demo_data.shape[0], 10)
