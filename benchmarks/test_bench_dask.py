"""fastrec.dask against the local call: 2 single-thread worker processes vs one 2-thread call.

    FASTREC_BENCH_SIZES=small,mid python -m pytest benchmarks/test_bench_dask.py \\
        --benchmark-only --benchmark-columns=median,min,max,rounds -s

Cosine top-k (k=100) of the item x user matrix and top-10 recommendation for every user of a
datasets.py size (default small; the reference backend takes ~1 min per call on mid, so mid and
large are worth it only with a compiled backend). The dask timing includes validation,
weighting and the scatter of the matrix to the workers: it is what a caller waits for. Each
dask benchmark resets the workers' peak-RSS counters first and records in ``extra_info``
(printed with ``-s``): each worker's RSS before and peak RSS over its rounds, the per-block
task times and each block's multiply-adds W_block. ``test_*_block_cost`` measure, in this
process and in CPU seconds, what one block costs: the fixed cost of a block (a one-row block)
and the cost per multiply-add (a block of 1/8 of the rows), the numbers the 1e9-interaction
estimate in benchmarks/README.md is built from. For cosine_topk: the once-per-call preparation
(``prepare_cosine_topk``, what fastrec.dask does on the client), the fixed cost of a block of
the prepared matrix (what each dask task pays), and, for comparison, the fixed cost of a
one-shot ``cosine_topk(X, rows=[0])`` (validation and preparation included: what each task
paid before the preparation was shipped).
"""

import os
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from datasets import interactions  # noqa: E402

import fastrec  # noqa: E402
import fastrec.dask as fd  # noqa: E402

SIZES = os.environ.get("FASTREC_BENCH_SIZES", "small").split(",")
ROUNDS = int(os.environ.get("FASTREC_BENCH_ROUNDS", "3"))
K, N_RECS = 100, 10


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """This process's RSS now; its peak (VmHWM) reset to it (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def _peak_rss():
    return _status_kb("VmHWM") * 1024


def _fresh_peaks(client):
    return client.run(_reset_peak_rss)


def _cpu_timed(benchmark, fn, *args, workers=None, **kwargs):
    """benchmark.pedantic(fn) that also records CPU seconds per call: of this process (all
    threads, median), and with ``workers`` (a client) of every worker process (mean; dask's
    own work in them included), so that the work of both set-ups compares on a machine shared
    with others, where wall times swing by 2x.
    """
    cpu = []

    def call():
        c0 = time.process_time()
        out = fn(*args, **kwargs)
        cpu.append(time.process_time() - c0)
        return out

    # Worker CPU is read around all rounds: a read inside the timed call would add its latency.
    w0 = workers.run(time.process_time) if workers else {}
    out = benchmark.pedantic(call, rounds=ROUNDS, iterations=1)
    w1 = workers.run(time.process_time) if workers else {}
    own = float(np.median(cpu))
    benchmark.extra_info["cpu_s_this_process"] = round(own, 3)
    if workers:
        per_worker = [round((w1[w] - w0[w]) / ROUNDS, 3) for w in w0]
        benchmark.extra_info["cpu_s_per_worker"] = per_worker
        benchmark.extra_info["cpu_s_total"] = round(own + sum(per_worker), 3)
    print(f"\n{benchmark.name}: {benchmark.extra_info}")
    return out


def _block_seconds(stream):
    """Wall seconds of each block task (its 'compute' spans), in block order."""
    tasks = [t for t in stream if isinstance(t["key"], tuple) and "fastrec" in t["key"][0]]
    by_block = {}
    for t in tasks:
        compute = [s for s in t["startstops"] if s["action"] == "compute"]
        by_block[t["key"][1]] = sum(s["stop"] - s["start"] for s in compute)
    return [round(by_block[i], 3) for i in sorted(by_block)]


def _record(benchmark, client, before, stream, block_work):
    peaks = client.run(_peak_rss)
    benchmark.extra_info["worker_rss_before_mb"] = [round(v / 2**20) for v in before.values()]
    benchmark.extra_info["worker_peak_rss_mb"] = [round(v / 2**20) for v in peaks.values()]
    benchmark.extra_info["block_wall_s"] = _block_seconds(stream)
    benchmark.extra_info["block_work"] = [float(w) for w in block_work]
    print(f"{benchmark.name} blocks: {benchmark.extra_info}")


@pytest.fixture(scope="module", params=SIZES)
def data(request):
    user_items = interactions(request.param)
    item_users = user_items.T.tocsr()
    # A row's multiply-adds in cosine top-k: the summed lengths of the columns it meets.
    user_degree = np.diff(user_items.indptr).astype(np.float64)
    row_work = item_users.astype(bool).astype(np.float64) @ user_degree
    return request.param, user_items, item_users, row_work


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_cosine_topk_local_2_threads(benchmark, data):
    size, _, item_users, _ = data
    benchmark.group = f"dask cosine_topk {size} k={K}"
    _cpu_timed(benchmark, fastrec.cosine_topk, item_users, K, n_threads=2)


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_cosine_topk_dask_2_workers(benchmark, data, client):
    size, _, item_users, row_work = data
    benchmark.group = f"dask cosine_topk {size} k={K}"
    before = _fresh_peaks(client)
    n = item_users.shape[0]
    block_rows = -(-n // 8)  # fd's default on 2 single-thread workers
    block_work = [row_work[r0 : r0 + block_rows].sum() for r0 in range(0, n, block_rows)]
    with distributed.get_task_stream(client) as ts:
        S = _cpu_timed(
            benchmark,
            fd.cosine_topk,
            item_users,
            K,
            client=client,
            workers=client,
            block_rows=block_rows,
        )
    assert S.shape == (n, n)
    _record(benchmark, client, before, ts.data[-len(block_work) :], block_work)


@pytest.fixture(scope="module")
def neighbours(data):
    return fastrec.cosine_topk(data[2], K)


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_recommend_local_2_threads(benchmark, data, neighbours):
    size, user_items, _, _ = data
    benchmark.group = f"dask recommend {size} n={N_RECS}"
    _cpu_timed(benchmark, fastrec.recommend, user_items, neighbours, N_RECS, n_threads=2)


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_recommend_dask_2_workers(benchmark, data, neighbours, client):
    size, user_items, _, _ = data
    benchmark.group = f"dask recommend {size} n={N_RECS}"
    before = _fresh_peaks(client)
    n = user_items.shape[0]
    block = -(-n // 8)
    # A user's work: the summed lengths of the neighbour rows of its items.
    nb_len = np.diff(neighbours.indptr).astype(np.float64)
    user_work = user_items.astype(bool).astype(np.float64) @ nb_len
    block_work = [user_work[r0 : r0 + block].sum() for r0 in range(0, n, block)]
    with distributed.get_task_stream(client) as ts:
        out = _cpu_timed(
            benchmark,
            fd.recommend,
            (user_items, neighbours),
            None,
            N_RECS,
            client=client,
            workers=client,
            block_users=block,
        )
    assert out.indices.shape == (n, N_RECS)
    _record(benchmark, client, before, ts.data[-len(block_work) :], block_work)


def _cpu(fn, *args, **kwargs):
    c0 = time.process_time()
    fn(*args, **kwargs)
    return time.process_time() - c0


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_cosine_topk_block_cost(benchmark, data):
    size, _, item_users, row_work = data
    benchmark.group = f"dask block cost {size}"
    n = item_users.shape[0]
    block = np.arange(-(-n // 8))
    X = item_users.copy()  # a fresh object each call would re-derive its canonical flag
    one_shot = min(_cpu(fastrec.cosine_topk, X, K, rows=[0], n_threads=1) for _ in range(ROUNDS))
    prepare = []
    for _ in range(ROUNDS):
        c0 = time.process_time()
        P = fastrec.prepare_cosine_topk(X, n_threads=1)
        prepare.append(time.process_time() - c0)
    setup = min(_cpu(fastrec.cosine_topk, P, K, rows=[0], n_threads=1) for _ in range(ROUNDS))
    cpu = []
    benchmark.pedantic(
        lambda: cpu.append(_cpu(fastrec.cosine_topk, P, K, rows=block, n_threads=1)),
        rounds=ROUNDS,
        iterations=1,
    )
    w = float(row_work[block].sum())
    benchmark.extra_info.update(
        prepare_cpu_s=round(min(prepare), 4),
        prepared_nbytes=P.nbytes,
        setup_cpu_s=round(setup, 4),
        one_shot_setup_cpu_s=round(one_shot, 4),
        block_rows=len(block),
        block_work=w,
        block_cpu_s=round(float(np.median(cpu)), 3),
        cpu_s_per_multiply_add=(float(np.median(cpu)) - setup) / w,
    )
    print(f"\n{benchmark.name}: {benchmark.extra_info}")


@pytest.mark.benchmark(min_rounds=1, warmup=False)
def test_recommend_block_cost(benchmark, data, neighbours):
    size, user_items, _, _ = data
    benchmark.group = f"dask block cost {size}"
    n = user_items.shape[0]
    block = np.arange(-(-n // 8))
    nb_len = np.diff(neighbours.indptr).astype(np.float64)
    user_work = user_items.astype(bool).astype(np.float64) @ nb_len
    setup = min(
        _cpu(fastrec.recommend, user_items, neighbours, N_RECS, user_ids=[0], n_threads=1)
        for _ in range(ROUNDS)
    )
    cpu = []
    benchmark.pedantic(
        lambda: cpu.append(
            _cpu(fastrec.recommend, user_items, neighbours, N_RECS, user_ids=block, n_threads=1)
        ),
        rounds=ROUNDS,
        iterations=1,
    )
    w = float(user_work[block].sum())
    benchmark.extra_info.update(
        setup_cpu_s=round(setup, 4),
        block_users=len(block),
        block_work=w,
        block_cpu_s=round(float(np.median(cpu)), 3),
        cpu_s_per_multiply_add=(float(np.median(cpu)) - setup) / w,
    )
    print(f"\n{benchmark.name}: {benchmark.extra_info}")
