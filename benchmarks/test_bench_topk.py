"""Ranking kernels: dense top-k vs memory bandwidth and numpy; fused recommend vs implicit.

    python -m pytest benchmarks/test_bench_topk.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-sort=name -k dense_4096
    python -m pytest benchmarks/test_bench_topk.py --benchmark-only ... -k dense_1024
    python -m pytest benchmarks/test_bench_topk.py --benchmark-only ... -k recommend

Dense top-k: float32 scores of (4096 x 100,000) and (1024 x 1,000,000), k = 10 and 100, with
and without an exclusion mask of 50 random items per row, on 1 and 2 threads (and the float32
row's bit-mask walk form, which CPUs without AVX-512 run, at 2 threads); baselines in the
same run: the machine's read bandwidth (NumPy sum over the same array, one thread, and two
threads each summing half), numpy argpartition + sort of the top k (row blocks of 64 MB, so
that its int64 index arrays stay bounded), and torch.topk when torch is installed. Each
result's ``extra_info`` holds the GB/s of scores read (array bytes / median time).

Recommend: top-10 for all 50,000 users of the mid set, seen items excluded, given the k=100
cosine item neighbourhood (implicit's CosineRecommender(K=100), computed once and cached under
benchmarks/.data), against implicit's ItemItemRecommender.recommend for all users
(filter_already_liked_items=True) on the same neighbourhood, and against the NumPy reference.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import pytest
import scipy.sparse as sp
from datasets import CACHE, interactions

import fastrec
from fastrec.kernels import topk_forms

SHAPES = {"dense_4096x100k": (4096, 100_000), "dense_1024x1M": (1024, 1_000_000)}
MASK_PER_ROW = 50
COMPILED = [b for b in ("cython", "numba") if b in fastrec.available_backends("topk")]


def _median(benchmark, fn, *args, rounds=5, **kwargs):
    out = benchmark.pedantic(
        fn, args=args, kwargs=kwargs, rounds=rounds, iterations=1, warmup_rounds=1
    )
    return out


def _record_gbs(benchmark, nbytes):
    benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 2)


@pytest.fixture(scope="module", params=list(SHAPES))
def dense_case(request):
    """One score array at a time (4 GB for the wide one), with its exclusion mask."""
    n_rows, n_cols = SHAPES[request.param]
    rng = np.random.default_rng(0)
    scores = rng.random((n_rows, n_cols), dtype=np.float32)
    rows = np.repeat(np.arange(n_rows), MASK_PER_ROW)
    cols = rng.integers(0, n_cols, rows.size)
    mask = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=scores.shape)
    mask.sum_duplicates()
    yield request.param, scores, mask
    del scores


def test_read_bandwidth_numpy_sum_1_thread(benchmark, dense_case):
    name, scores, _ = dense_case
    benchmark.group = f"{name} bandwidth"
    _median(benchmark, scores.sum)
    _record_gbs(benchmark, scores.nbytes)


def test_read_bandwidth_numpy_sum_2_threads(benchmark, dense_case):
    name, scores, _ = dense_case
    benchmark.group = f"{name} bandwidth"
    half = scores.shape[0] // 2
    with ThreadPoolExecutor(2) as pool:  # NumPy's reduction releases the GIL
        _median(benchmark, lambda: sum(pool.map(np.sum, (scores[:half], scores[half:]))))
    _record_gbs(benchmark, scores.nbytes)


def numpy_topk(scores, k, block_rows):
    """argpartition + sort of the k best per row, in row blocks (bounded index arrays)."""
    n_rows = scores.shape[0]
    idx = np.empty((n_rows, k), np.int64)
    val = np.empty((n_rows, k), scores.dtype)
    for r0 in range(0, n_rows, block_rows):
        block = scores[r0 : r0 + block_rows]
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        pv = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[r0 : r0 + block_rows] = np.take_along_axis(part, order, axis=1)
        val[r0 : r0 + block_rows] = np.take_along_axis(pv, order, axis=1)
    return idx, val


@pytest.mark.parametrize("k", [10, 100])
def test_numpy_argpartition(benchmark, dense_case, k):
    name, scores, _ = dense_case
    benchmark.group = f"{name} k={k}"
    block_rows = max(1, (1 << 24) // scores.shape[1])
    _median(benchmark, numpy_topk, scores, k, block_rows, rounds=3)
    _record_gbs(benchmark, scores.nbytes)


@pytest.mark.parametrize("k", [10, 100])
def test_torch_topk(benchmark, dense_case, k):
    torch = pytest.importorskip("torch")
    name, scores, _ = dense_case
    benchmark.group = f"{name} k={k}"
    t = torch.from_numpy(scores)
    torch.set_num_threads(2)
    _median(benchmark, torch.topk, t, k, dim=1, rounds=3)
    _record_gbs(benchmark, scores.nbytes)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask50"])
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("k", [10, 100])
def test_topk(benchmark, dense_case, k, backend, masked, n_threads):
    name, scores, mask = dense_case
    benchmark.group = f"{name} k={k}"
    out = _median(
        benchmark,
        fastrec.topk,
        scores,
        k,
        exclude=mask if masked else None,
        backend=backend,
        n_threads=n_threads,
    )
    _record_gbs(benchmark, scores.nbytes)
    assert out.indices.shape == (scores.shape[0], k)
    if masked:  # spot check: no excluded column returned
        r = scores.shape[0] // 3
        assert not np.isin(out.indices[r], mask.indices[mask.indptr[r] : mask.indptr[r + 1]]).any()


@pytest.mark.parametrize("backend", [b for b in COMPILED if b in topk_forms.BACKENDS])
@pytest.mark.parametrize("k", [10, 100])
def test_topk_walk_form(benchmark, dense_case, k, backend):
    """The bit-mask walk float32 row (what CPUs without AVX-512 run), 2 threads, no mask: the
    same run's comparison for the compress form that test_topk measures on AVX-512 CPUs."""
    name, scores, _ = dense_case
    benchmark.group = f"{name} k={k}"
    with topk_forms.float32_form(backend, False):
        _median(benchmark, fastrec.topk, scores, k, backend=backend, n_threads=2)
    _record_gbs(benchmark, scores.nbytes)


@pytest.mark.parametrize("form", ["auto", "walk"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("k", [10, 100])
def test_topk_compute_per_call(benchmark, k, backend, dtype, form):
    """Selection work without the memory stream: 16 rows of 100,000 (6.4/12.8 MB, cache
    resident), one thread. Run with ``--benchmark-timer time.process_time`` for CPU time,
    which a shared machine barely disturbs; per row = median / 16."""
    if form == "walk" and (dtype != "float32" or backend not in topk_forms.BACKENDS):
        pytest.skip("only float32 rows have two forms")
    scores = np.random.default_rng(0).random((16, 100_000)).astype(dtype)
    benchmark.group = f"compute 16x100k k={k}"
    forced = topk_forms.float32_form(backend, False) if form == "walk" else nullcontext()
    with forced:
        benchmark.pedantic(
            fastrec.topk,
            args=(scores, k),
            kwargs=dict(backend=backend, n_threads=1),
            rounds=40,
            iterations=1,
            warmup_rounds=2,
        )


# ---- recommend -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mid_neighbours():
    """The mid set and its k=100 cosine item neighbourhood (implicit's, cached on disk)."""
    user_items = interactions("mid")
    path = CACHE / "mid-seed0-implicit-cosine-k100.npz"
    if path.exists():
        neighbours = sp.load_npz(path).tocsr()
    else:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=100)
        model.fit(user_items, show_progress=False)
        neighbours = model.similarity.tocsr()
        sp.save_npz(path, neighbours, compressed=False)
    return user_items, neighbours


def test_recommend_implicit(benchmark, mid_neighbours):
    from implicit.nearest_neighbours import ItemItemRecommender

    user_items, neighbours = mid_neighbours
    benchmark.group = "recommend mid top-10 all users"
    model = ItemItemRecommender(K=100)
    model.similarity = neighbours
    from implicit.nearest_neighbours import NearestNeighboursScorer

    model.scorer = NearestNeighboursScorer(neighbours)
    users = np.arange(user_items.shape[0])
    ids, _ = _median(
        benchmark,
        model.recommend,
        users,
        user_items,
        N=10,
        filter_already_liked_items=True,
        rounds=3,
    )
    ours = fastrec.recommend(
        user_items, neighbours, 10, backend=COMPILED[0] if COMPILED else "numpy"
    )
    # Same neighbourhood, same scores: the top-10 sets agree up to ties at the cut.
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids[:2000], ours.indices[:2000])])
    benchmark.extra_info["top10 overlap with fastrec"] = round(float(overlap), 4)
    assert overlap > 0.95


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_recommend(benchmark, mid_neighbours, dtype, backend, n_threads):
    """float64: implicit's matrix as is; float32: what fastrec.cosine_topk returns for the
    float32 interactions (less to read per update)."""
    user_items, neighbours = mid_neighbours
    neighbours = neighbours.astype(dtype)
    benchmark.group = "recommend mid top-10 all users"
    out = _median(
        benchmark,
        fastrec.recommend,
        user_items,
        neighbours,
        10,
        backend=backend,
        n_threads=n_threads,
    )
    assert out.indices.shape == (user_items.shape[0], 10)


def test_recommend_reference(benchmark, mid_neighbours):
    user_items, neighbours = mid_neighbours
    benchmark.group = "recommend mid top-10 all users"
    benchmark.pedantic(
        fastrec.recommend,
        args=(user_items, neighbours, 10),
        kwargs=dict(backend="numpy"),
        rounds=1,
        iterations=1,
    )
