"""fastrec.dask on a LocalCluster (2 worker processes, 1 thread each): every entry point bit for
bit the local call, a worker killed mid-run, bad inputs rejected clearly."""

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

distributed = pytest.importorskip("distributed", reason="needs dask.distributed (dask extra)")
pd = pytest.importorskip("pandas", reason="needs pandas (test extra)")
dd = pytest.importorskip("dask.dataframe", reason="needs dask.dataframe (dask extra)")

import fastrec  # noqa: E402
import fastrec.dask as fd  # noqa: E402
from fastrec import BackendUnavailableError, TopK  # noqa: E402

N_WORKERS = 2


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.CRITICAL,
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def _all_workers_up(request):
    # A test that kills a worker leaves the nanny restarting it: later tests wait for it.
    if "client" in request.fixturenames:
        request.getfixturevalue("client").wait_for_workers(N_WORKERS, timeout=60)


def assert_csr_identical(a, b):
    assert type(a) is type(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.indptr.dtype == b.indptr.dtype and a.indices.dtype == b.indices.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def assert_topk_identical(a, b):
    assert a.indices.shape == b.indices.shape and a.scores.dtype == b.scores.dtype
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


def interactions(n_users=120, n_items=60, density=0.08, seed=0, dtype=np.float64, binary=False):
    rng = np.random.default_rng(seed)
    X = sp.random(
        n_users,
        n_items,
        density=density,
        random_state=rng,
        format="csr",
        dtype=dtype,
        data_rvs=lambda size: rng.integers(1, 4, size),
    )
    X.data = X.data.astype(dtype)
    if binary:
        X.data[:] = 1
    keep = np.ones(n_users)
    keep[5] = 0  # an empty user
    X = sp.csr_matrix(sp.diags(keep) @ X, dtype=dtype)
    X.eliminate_zeros()
    return X


# ---- cosine_topk ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(shrink=3.0, min_support=2),
        dict(include_self=True, min_similarity=0.1),
        dict(weighting="tfidf"),
        dict(weighting="bm25", shrink=1.0),
    ],
)
@pytest.mark.parametrize("block_rows", [1, 17, None, 1000])
def test_cosine_topk_identical_to_local(client, opts, block_rows):
    X = interactions().T.tocsr()  # items x users: item-item neighbours
    got = fd.cosine_topk(X, 7, client=client, block_rows=block_rows, **opts)
    assert_csr_identical(got, fastrec.cosine_topk(X, 7, **opts))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", [sp.csr_matrix, sp.csr_array])
def test_cosine_topk_keeps_dtype_and_family(client, dtype, family):
    X = family(interactions(dtype=dtype, binary=True))
    got = fd.cosine_topk(X, 5, client=client, block_rows=30)
    assert_csr_identical(got, fastrec.cosine_topk(X, 5))


def test_default_client_is_used_when_none_given(client):
    X = interactions()
    assert_csr_identical(fd.cosine_topk(X, 4), fastrec.cosine_topk(X, 4))


def test_progress_is_reported_by_dask(client, capsys):
    X = interactions()
    got = fd.cosine_topk(X, 4, client=client, block_rows=20, progress=True)
    assert_csr_identical(got, fastrec.cosine_topk(X, 4))
    assert "100%" in capsys.readouterr().out  # distributed.progress's text bar, completed


# ---- cosine_similarity ---------------------------------------------------------------------


@pytest.mark.parametrize("with_y", [False, True])
@pytest.mark.parametrize("min_similarity", [0.0, 0.3])
@pytest.mark.parametrize("block_rows", [1, 23, None])
def test_cosine_similarity_identical_to_local(client, with_y, min_similarity, block_rows):
    X = interactions(80, 40, seed=1)
    Y = interactions(50, 40, seed=2, dtype=np.float32) if with_y else None
    got = fd.cosine_similarity(
        X, Y, client=client, block_rows=block_rows, min_similarity=min_similarity
    )
    assert_csr_identical(got, fastrec.cosine_similarity(X, Y, min_similarity=min_similarity))


def test_cosine_similarity_blocks_of_constant_rows_identical_to_local(client):
    # Blocks whose rows each hold one constant value while other rows do not: the product is
    # decided over the whole of X (binary or weighted), as in the local call.
    X = interactions(40, 30, density=0.5, seed=7)
    for i in range(20):
        X.data[X.indptr[i] : X.indptr[i + 1]] = (0.3, 1.7, 2.9, 7.1)[i % 4]
    Y = interactions(25, 30, density=0.6, seed=8, binary=True)
    got = fd.cosine_similarity(X, Y, client=client, block_rows=10)
    assert_csr_identical(got, fastrec.cosine_similarity(X, Y))


# ---- recommend -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    UI = interactions(150, 70, seed=3)
    return UI, fastrec.cosine_topk(UI.T.tocsr(), 10, shrink=2.0)


@pytest.mark.parametrize("block_users", [1, 16, None])
def test_recommend_pair_identical_to_local(client, pair, block_users):
    UI, NB = pair
    got = fd.recommend(pair, None, 6, client=client, block_users=block_users)
    assert_topk_identical(got, fastrec.recommend(UI, NB, 6))


def test_recommend_subset_exclusions_and_options_identical(client, pair):
    UI, NB = pair
    users = np.array([7, 3, 149, 3, 0, 5, 88])  # any order, repeats, an empty user
    rng = np.random.default_rng(4)
    exclude = sp.random(*UI.shape, density=0.1, random_state=rng, format="csr")
    for kw in (dict(exclude=exclude), dict(exclude_seen=False)):
        got = fd.recommend(pair, users, 9, client=client, block_users=3, **kw)
        assert_topk_identical(got, fastrec.recommend(UI, NB, 9, user_ids=users, **kw))


def test_recommend_no_users_gives_empty_result(client, pair):
    UI, NB = pair
    got = fd.recommend(pair, [], 4, client=client)
    assert_topk_identical(got, fastrec.recommend(UI, NB, 4, user_ids=[]))


class _PairModel:
    """The smallest object with the model contract fastrec.dask relies on (n_users_ and
    recommend(user_ids, n=, exclude_seen=) -> TopK), here item-kNN scoring on a fixed pair."""

    def __init__(self, UI, NB):
        self.user_items_, self.neighbours_ = UI, NB
        self.n_users_ = UI.shape[0]

    def recommend(self, user_ids, n=10, exclude_seen=True):
        return fastrec.recommend(
            self.user_items_, self.neighbours_, n, user_ids=user_ids, exclude_seen=exclude_seen
        )


def test_recommend_model_identical_to_local(client, pair):
    model = _PairModel(*pair)
    users = np.arange(149, -1, -2)
    got = fd.recommend(model, users, 5, client=client, block_users=11, exclude_seen=False)
    assert_topk_identical(got, model.recommend(users, n=5, exclude_seen=False))


def _long_format(top: TopK, users):
    n = top.indices.shape[1]
    keep = top.indices >= 0
    return pd.DataFrame(
        {
            "user": np.repeat(users, n).reshape(-1, n)[keep],
            "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), (len(users), 1))[keep],
            "item": top.indices[keep],
            "score": top.scores[keep],
        }
    )


def test_recommend_to_parquet_one_file_per_block(client, pair, tmp_path):
    UI, NB = pair
    users = np.arange(UI.shape[0])[::-1].copy()
    out = tmp_path / "recs"
    paths = fd.recommend(pair, users, 6, client=client, block_users=40, to_parquet=out)
    assert len(paths) == 4 and all(os.path.dirname(p) == str(out) for p in paths)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths)  # no tmp left
    got = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    want = _long_format(fastrec.recommend(UI, NB, 6, user_ids=users), users)
    pd.testing.assert_frame_equal(got, want)
    assert (got["item"] >= 0).all()  # padding dropped: user 5 has no interactions


def test_recommend_to_parquet_writes_original_ids_of_a_model(client, tmp_path):
    from fastrec import data
    from fastrec.models import ItemKNN

    train = data.synthetic(80, 40, seed=3, impressions_per_user=25)
    model = ItemKNN(k=10).fit(train)
    users = np.arange(train.n_users)
    paths = fd.recommend(
        model, users, 4, client=client, block_users=30, to_parquet=tmp_path / "ids"
    )
    got = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    top = model.recommend(users, n=4)
    want = _long_format(top, users)
    want["user"] = train.user_ids[want["user"].to_numpy()]
    want["item"] = train.item_ids[want["item"].to_numpy()]
    pd.testing.assert_frame_equal(got, want)


# ---- Dask DataFrame input ------------------------------------------------------------------


def _frame(X, npartitions=3, weight=True):
    coo = X.tocoo()
    pdf = pd.DataFrame({"user": coo.row.astype(np.int64), "item": coo.col.astype(np.int64)})
    if weight:
        pdf["weight"] = coo.data
    return dd.from_pandas(pdf.sample(frac=1.0, random_state=0), npartitions=npartitions)


def test_interactions_to_csr_matches_scipy(client):
    X = interactions(dtype=np.float32)
    got = fd.interactions_to_csr(_frame(X), client=client, shape=(X.shape[0], None))
    assert got.dtype == np.float32
    assert (got != X).nnz == 0 and got.shape == X.shape
    ones = fd.interactions_to_csr(
        _frame(X, weight=False),
        columns=("item", "user", None),
        shape=(None, X.shape[0]),
        client=client,
    )
    assert ones.dtype == np.float64 and ones.shape == (X.indices.max() + 1, X.shape[0])
    assert (ones != sp.csr_matrix((X.T != 0)[: ones.shape[0]], dtype=np.float64)).nnz == 0


def test_interactions_duplicates_are_summed(client):
    pdf = pd.DataFrame({"user": [0, 0, 1, 0], "item": [1, 1, 0, 1], "weight": [1.0, 2.0, 1, 3]})
    got = fd.interactions_to_csr(dd.from_pandas(pdf, npartitions=2), client=client)
    np.testing.assert_array_equal(got.toarray(), [[0, 6], [1, 0]])


def test_dataframe_inputs_identical_to_local(client, pair):
    UI, NB = pair
    frame = _frame(UI)
    # Rows compared = items: name the columns in that order.
    got = fd.cosine_topk(
        frame, 10, shrink=2.0, client=client, block_rows=9, columns=("item", "user", "weight")
    )
    assert_csr_identical(got, NB)
    recs = fd.recommend((frame, NB), None, 5, client=client, block_users=50)
    assert_topk_identical(recs, fastrec.recommend(UI, NB, 5))


# ---- failures ------------------------------------------------------------------------------


def test_killed_worker_mid_run_gives_complete_identical_result(client):
    # Blocks of ~0.1 s each (reference backend) so that the run is surely still going when
    # one worker process is killed; its tasks (and results not yet collected) are lost.
    X = interactions(900, 2500, density=0.05, seed=5).T.tocsr()
    want = fastrec.cosine_topk(X, 20, backend="numpy")
    pids = client.run(os.getpid)
    out = {}

    def run():
        out["S"] = fd.cosine_topk(X, 20, client=client, block_rows=60, backend="numpy")

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    busy = []
    while not busy and time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items() if keys]
        time.sleep(0.01)
    assert busy, "no task started"
    os.kill(pids[busy[0]], signal.SIGKILL)
    killed_mid_run = thread.is_alive()
    thread.join(timeout=120)
    assert killed_mid_run and not thread.is_alive()
    assert_csr_identical(out["S"], want)
    assert busy[0] not in client.run(os.getpid)  # the killed worker really went away


class _FailingModel(_PairModel):
    def recommend(self, user_ids, n=10, exclude_seen=True):
        if 7 in user_ids:
            raise RuntimeError("user 7 cannot be scored")
        return super().recommend(user_ids, n, exclude_seen)


def test_error_in_a_task_reaches_the_caller(client, pair):
    with pytest.raises(RuntimeError, match="user 7 cannot be scored"):
        fd.recommend(_FailingModel(*pair), None, 3, client=client, block_users=5, retries=0)


def test_backend_that_cannot_prepare_rejected_before_any_task(client):
    with pytest.raises(BackendUnavailableError, match="cuda"):
        fd.cosine_topk(interactions(), 3, client=client, backend="cuda")


# ---- bad inputs ----------------------------------------------------------------------------


def test_closed_client_rejected(client):
    other = distributed.Client(client.scheduler.address)
    other.close()
    X = interactions()
    for call in (
        lambda: fd.cosine_topk(X, 3, client=other),
        lambda: fd.cosine_similarity(X, client=other),
        lambda: fd.recommend((X, sp.eye(X.shape[1], format="csr")), None, 3, client=other),
    ):
        with pytest.raises(ValueError, match="client is not running.*closed"):
            call()


def test_cluster_without_workers_rejected():
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cl:
        with distributed.Client(cl, set_as_default=False) as empty:
            with pytest.raises(ValueError, match="has no workers"):
                fd.cosine_topk(interactions(), 3, client=empty)


@pytest.mark.parametrize(
    "call, err, msg",
    [
        (
            lambda X, c: fd.cosine_topk(X, 3, client=c, block_rows=0),
            ValueError,
            "block_rows must be >= 1",
        ),
        (
            lambda X, c: fd.cosine_topk(X, 3, client=c, block_rows=2.5),
            TypeError,
            "block_rows must be an integer",
        ),
        (
            lambda X, c: fd.cosine_similarity(X, client=c, block_rows=-1),
            ValueError,
            "block_rows must be >= 1",
        ),
        (
            lambda X, c: fd.recommend(
                (X, sp.eye(X.shape[1], format="csr")), None, 3, client=c, block_users=0
            ),
            ValueError,
            "block_users must be >= 1",
        ),
        (lambda X, c: fd.cosine_topk(X, 0, client=c), ValueError, "k must be >= 1"),
        (
            lambda X, c: fd.cosine_topk(X, 3, client=c, retries=-1),
            ValueError,
            "retries must be >= 0",
        ),
        (
            lambda X, c: fd.cosine_topk(X, 3, client=c, backend="gpu"),
            ValueError,
            "backend must be 'auto' or one of",
        ),
        (
            lambda X, c: fd.cosine_topk(X.toarray(), 3, client=c),
            TypeError,
            "X must be a scipy.sparse",
        ),
        (
            lambda X, c: fd.cosine_topk(X, 3, client="tcp://x:1"),
            TypeError,
            "client must be a distributed.Client",
        ),
        (
            lambda X, c: fd.recommend(X, None, 3, client=c),
            TypeError,
            "model_or_matrices must be a fitted model or a",
        ),
        (
            lambda X, c: fd.recommend((X, sp.eye(3, format="csr")), None, 3, client=c),
            ValueError,
            "item_neighbours must have shape",
        ),
        (
            lambda X, c: fd.recommend(
                (X, sp.eye(X.shape[1], format="csr")), [0, 10**6], 3, client=c
            ),
            ValueError,
            "user_ids contains 1000000",
        ),
        (
            lambda X, c: fd.recommend(
                _PairModel(X, sp.eye(X.shape[1], format="csr")), None, 3, client=c, exclude=X
            ),
            ValueError,
            "exclude= and backend= apply",
        ),
        (
            lambda X, c: fd.recommend(
                _PairModel(X, sp.eye(X.shape[1], format="csr")), None, 3, client=c, backend="numpy"
            ),
            ValueError,
            "a model recommends",
        ),
    ],
)
def test_bad_arguments_rejected_clearly(client, call, err, msg):
    with pytest.raises(err, match=msg):
        call(interactions(), client)


def test_unfitted_model_rejected(client):
    class Unfitted:
        def recommend(self, user_ids, n=10, exclude_seen=True):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="Unfitted is not fitted"):
        fd.recommend(Unfitted(), None, 3, client=client)


@pytest.mark.parametrize(
    "pdf, columns, err, msg",
    [
        (
            dict(user=[0, 1], item=[1, 0]),
            ("user", "item", "weight"),
            ValueError,
            "no column 'weight'",
        ),
        (
            dict(user=[0.0, 1.0], item=[1, 0], weight=[1.0, 1.0]),
            ("user", "item", "weight"),
            TypeError,
            "column 'user' must hold integer ids",
        ),
        (
            dict(user=[0, -1], item=[1, 0], weight=[1.0, 1.0]),
            ("user", "item", "weight"),
            ValueError,
            "column 'user' contains negative ids",
        ),
        (
            dict(user=[0, 1], item=[1, 0], weight=[1.0, np.nan]),
            ("user", "item", "weight"),
            ValueError,
            "X contains NaN",
        ),
    ],
)
def test_bad_dataframes_rejected(client, pdf, columns, err, msg):
    frame = dd.from_pandas(pd.DataFrame(pdf), npartitions=1)
    with pytest.raises(err, match=msg):
        fd.cosine_topk(frame, 2, client=client, columns=columns)


# ---- fitted models (fastrec.models) --------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_models():
    """Every fitted model kind, small and single-threaded (skipped where models are absent)."""
    models = pytest.importorskip("fastrec.models", reason="fastrec.models is not importable here")
    if not hasattr(models, "ItemKNN"):
        pytest.skip("fastrec.models has no ItemKNN yet")
    X = interactions(150, 70, seed=6, binary=True)
    out = {
        "itemknn": models.ItemKNN(k=10, shrink=1.0, n_threads=1).fit(X),
        "userknn": models.UserKNN(k=10, n_threads=1).fit(X),
        "hybrid-blend": models.Hybrid(
            candidates=[models.ItemKNN(k=10, n_threads=1), models.Popularity()],
            rerank=False,
        ).fit(X),
    }
    return out


@pytest.mark.parametrize("kind", ["itemknn", "userknn", "hybrid-blend"])
def test_fitted_models_identical_to_local(client, fitted_models, kind):
    model = fitted_models[kind]
    users = np.array([149, 0, 5, 77, 77, 3, 120, 64, 9])
    for exclude_seen in (True, False):
        got = fd.recommend(model, users, 6, client=client, block_users=4, exclude_seen=exclude_seen)
        assert_topk_identical(got, model.recommend(users, n=6, exclude_seen=exclude_seen))


def test_hybrid_with_context_identical_to_local(client):
    data = pytest.importorskip("fastrec.data", reason="fastrec.data is not importable here")
    models = pytest.importorskip("fastrec.models", reason="fastrec.models is not importable here")
    ranker = pytest.importorskip("_ranker", reason="tests/_ranker.py not on the path")
    d = data.synthetic(400, 150, seed=8, impressions_per_user=60)
    model = models.Hybrid(
        candidates=[models.ItemKNN(k=20, n_threads=1), models.Popularity()],
        ranker=ranker.make_ranker(),
        n_candidates=30,
    ).fit(d)
    users = np.arange(30)
    for context in ({"daypart": 2}, {"daypart": np.arange(30) % 4}):
        got = fd.recommend(model, users, 10, client=client, block_users=7, context=context)
        assert_topk_identical(got, model.recommend(users, 10, context=context))
    with pytest.raises(ValueError, match=r"context\['daypart'\] must be one code or one per"):
        fd.recommend(model, users, 10, client=client, context={"daypart": [1, 2]})
    with pytest.raises(ValueError, match="context= applies to a model only"):
        fd.recommend(
            (model.user_items_, sp.eye(150, format="csr")),
            users,
            3,
            client=client,
            context={"daypart": 1},
        )


# ---- embedding retrieval (dot_topk) ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("block_rows", [None, 1, 600])
def test_dot_topk_identical_to_local(client, backend, block_rows):
    """1,300 queries: several 512-query tiles, blocks rounded up to whole tiles."""
    rng = np.random.default_rng(11)
    Q = rng.standard_normal((1300, 8)).astype(np.float32)
    X = rng.standard_normal((900, 8)).astype(np.float32)
    seen = sp.csr_matrix(rng.random((1300, 900)) < 0.05)
    bias = rng.standard_normal(900).astype(np.float32)
    for kw in (
        dict(exclude=seen),
        dict(exclude=seen, item_bias=bias, metric="cosine", candidates=np.arange(0, 900, 3)),
    ):
        got = fd.dot_topk(Q, X, 7, client=client, block_rows=block_rows, backend=backend, **kw)
        assert_topk_identical(got, fastrec.dot_topk(Q, X, 7, backend=backend, **kw))


def test_dot_topk_no_queries_and_bad_input(client):
    got = fd.dot_topk(np.empty((0, 3)), np.ones((4, 3)), 2, client=client)
    assert got.indices.shape == (0, 2) and got.scores.dtype == np.float64
    with pytest.raises(ValueError, match="same number of factors"):
        fd.dot_topk(np.ones((2, 3)), np.ones((4, 2)), 2, client=client)
    with pytest.raises(ValueError, match="block_rows must be >= 1"):
        fd.dot_topk(np.ones((2, 3)), np.ones((4, 3)), 2, client=client, block_rows=0)
