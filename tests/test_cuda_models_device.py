"""The models' recommend on device CSR request rows: ItemKNN, Popularity and ALS score on the
device (the request rows read in place, results on the device, the same TopK as for host rows);
UserKNN and Hybrid refuse with a TypeError that says why. Inputs are the ``device_inputs``
stand-ins, whose arrays refuse ``copy_to_host``: a host round trip of a request fails the test.
Tiny inputs, few kernel launches: the simulator costs about a second per launch.
"""

import pickle

import numpy as np
import pytest
from comparators import assert_topk_equal
from device_inputs import CupyLikeCSR, DuckCSR, TorchLikeCSR, canonical, no_host_copy_of

import fastrec
from fastrec._dispatch import backend_status
from fastrec._validation import is_device_array
from fastrec.data import from_arrays
from fastrec.models import ALS, Hybrid, ItemKNN, Popularity, UserKNN
from fastrec.models import _base as models_base
from fastrec.models import _device as device_module
from fastrec.models import knn as knn_module

_ok, _why = backend_status("cuda")
pytestmark = pytest.mark.skipif(not _ok, reason=f"CUDA backend unavailable: {_why}")


def _data(dtype=np.float64):
    """(fit matrix 14 users x 10 items with values 1-3, request rows 4 x 10: one empty)."""
    rng = np.random.default_rng(7)
    UI = canonical(rng.integers(1, 4, (14, 10)) * (rng.random((14, 10)) < 0.4), dtype)
    R = rng.integers(1, 4, (4, 10)) * (rng.random((4, 10)) < 0.35)
    R[2] = 0
    return UI, canonical(R, dtype)


def _on_host(res):
    """A device TopK's arrays on the host (results are new device arrays, not the inputs)."""
    assert is_device_array(res.indices) and is_device_array(res.scores)
    return res.indices.copy_to_host(), res.scores.copy_to_host()


def _host_cuda(model, **kw):
    """The model's recommend on host request rows, run by the "cuda" backend."""
    backend, model.backend = model.backend, "cuda"
    try:
        return model.recommend(**kw)
    finally:
        model.backend = backend


# ---- the same TopK as for host rows, on the device ---------------------------------------------


def test_itemknn_device_rows_same_bits_as_host_rows_and_neighbours_moved_once(monkeypatch):
    UI, R = _data()
    model = ItemKNN(k=4, verbose=False).fit(UI)  # fit on the CPU; "auto" runs "cuda" below
    moved = []
    copy = knn_module.device_csr_copy
    monkeypatch.setattr(knn_module, "device_csr_copy", lambda M: moved.append(M) or copy(M))
    rows = CupyLikeCSR(R)
    with no_host_copy_of(rows):
        got = model.recommend(user_items=rows, n=5)
    got = _on_host(got)
    assert_topk_equal(got, _host_cuda(model, user_items=R, n=5), exact=True)
    assert_topk_equal(got, model.recommend(user_items=R, n=5))  # the CPU backend
    again = model.recommend(user_items=TorchLikeCSR(R), n=5, exclude_seen=False)
    want = model.recommend(user_items=R, n=5, exclude_seen=False)
    assert_topk_equal(_on_host(again), want)
    assert len(moved) == 1  # the neighbourhood went to the device once, not per request
    # Pickled (as dask ships it) without the cache that now holds device arrays.
    clone = pickle.loads(pickle.dumps(model))
    assert "_fitted_cache" not in clone.__dict__ and "_fitted_cache" in model.__dict__
    want_cpu = model.recommend(user_items=R, n=5)
    assert_topk_equal(clone.recommend(user_items=R, n=5), want_cpu, exact=True)


def test_itemknn_device_rows_with_filters_in_blocks_and_a_device_mask(monkeypatch):
    """Item lists become mask blocks (made small here: three blocks, stacked on the device);
    a device exclude mask is read in place."""
    UI, R = _data()
    model = ItemKNN(k=4, verbose=False).fit(UI)
    monkeypatch.setattr(models_base, "_MASK_BLOCK_ENTRIES", 6)  # 2 rows x 3 masked items
    stacked = []
    concat = device_module.device_concat_rows
    monkeypatch.setattr(
        device_module, "device_concat_rows", lambda p: stacked.append(len(p)) or concat(p)
    )
    kw = dict(n=3, exclude=[1, 7], candidates=[0, 2, 3, 4, 5, 6, 7, 8])
    got = model.recommend(user_items=DuckCSR(R.indptr, R.indices, R.data, R.shape), **kw)
    assert stacked == [2, 2]  # indices and scores, of two blocks of rows
    assert_topk_equal(_on_host(got), model.recommend(user_items=R, **kw))
    mask = canonical(np.eye(4, 10, k=3) + np.eye(4, 10, k=5))
    got = model.recommend(user_items=CupyLikeCSR(R), n=3, exclude=TorchLikeCSR(mask))
    assert_topk_equal(_on_host(got), model.recommend(user_items=R, n=3, exclude=mask))


def test_popularity_device_rows_same_as_host_rows_with_original_ids():
    """Fit on Interactions (float32 values, string ids): item lists in original ids, the
    device result decodes to the host result's ids."""
    UI, R = _data(np.float32)
    users, items = UI.nonzero()
    data = from_arrays(users, np.array([f"i{j}" for j in items]), UI.data)
    model = Popularity(by="values").fit(data)
    np.testing.assert_array_equal(model.item_index([f"i{j}" for j in range(10)]), np.arange(10))
    kw = dict(n=4, exclude=["i3"], candidates=["i0", "i1", "i2", "i3", "i5", "i6", "i9"])
    rows = CupyLikeCSR(R)
    with no_host_copy_of(rows):
        got = model.recommend(user_items=rows, **kw)
    want = model.recommend(user_items=R, **kw)
    assert_topk_equal(_on_host(got), want, exact=True)  # 1 * score is exact: same bits
    np.testing.assert_array_equal(model.decode_items(got.indices), model.decode_items(want.indices))
    mask = canonical(np.eye(4, 10) + np.eye(4, 10, k=2))
    kw = dict(n=10, exclude_seen=False, exclude=TorchLikeCSR(mask))
    got = model.recommend(user_items=TorchLikeCSR(R), **kw)
    want = model.recommend(user_items=R, n=10, exclude_seen=False, exclude=mask)
    assert_topk_equal(_on_host(got), want, exact=True)


def test_als_device_rows_same_bits_as_host_rows():
    UI, R = _data()
    R = R[1:3]  # one simulated block: a user with items and an empty one
    model = ALS(factors=2, iterations=2, dtype="float64").fit(UI)
    rows = CupyLikeCSR(R)
    with no_host_copy_of(rows):
        got = model.recommend(user_items=rows, n=4, exclude=[0])
    got = _on_host(got)
    assert_topk_equal(got, _host_cuda(model, user_items=R, n=4, exclude=[0]), exact=True)
    cpu = model.recommend(user_items=R, n=4, exclude=[0])
    assert_topk_equal(got, cpu, rtol=1e-9, atol=1e-12)
    rows = TorchLikeCSR(R)
    with no_host_copy_of(rows):
        factors = model.fold_in(rows)
    assert is_device_array(factors)
    np.testing.assert_allclose(factors.copy_to_host(), model.fold_in(R), rtol=1e-9, atol=1e-12)


# ---- refusals and bad input: a clear error, never a copy to the host -------------------------


def test_models_without_a_device_path_say_why():
    UI, R = _data()
    with pytest.raises(TypeError, match="UserKNN cannot take user_items as a GPU device CSR: an"):
        UserKNN(k=3, verbose=False).fit(UI).recommend(user_items=CupyLikeCSR(R))
    with pytest.raises(TypeError, match="Hybrid cannot take user_items as a GPU device CSR"):
        Hybrid().recommend(user_items=CupyLikeCSR(R))
    model = ItemKNN(k=3, verbose=False).fit(UI)
    with pytest.raises(TypeError, match="ItemKNN.recommend takes it on the device, this method"):
        model.explain(item_id=1, user_items=CupyLikeCSR(R[:1]))
    with pytest.raises(ValueError, match="give exactly one of user_ids"):
        model.recommend([0], user_items=CupyLikeCSR(R))
    model.backend = "numba"
    with pytest.raises(TypeError, match="user_items is a GPU device sparse matrix but backend="):
        model.recommend(user_items=CupyLikeCSR(R))
    als = ALS(factors=2, iterations=1, backend="numpy").fit(UI)
    with pytest.raises(TypeError, match="backend='numpy' runs on the CPU"):
        als.fold_in(CupyLikeCSR(R))


def test_bad_device_rows_rejected():
    UI, R = _data()
    model = ItemKNN(k=3, verbose=False).fit(UI)
    with pytest.raises(ValueError, match="user_items has 9 columns but the model knows 10"):
        model.recommend(user_items=CupyLikeCSR(canonical(R[:, :9], np.float64)))
    with pytest.raises(TypeError, match=r"dtype float32 but ItemKNN was fit on float64.*astype"):
        model.recommend(user_items=CupyLikeCSR(canonical(R, np.float32)))
    bad = DuckCSR(np.array([0, 2]), np.array([3, 1]), np.array([1.0, 1.0]), (1, 10))
    with pytest.raises(ValueError, match="user_items has unsorted column indices in a row"):
        model.recommend(user_items=bad)
    with pytest.raises(ValueError, match="cannot be combined with candidates"):
        model.recommend(user_items=CupyLikeCSR(R), exclude=CupyLikeCSR(R), candidates=[1, 2])
    with pytest.raises(TypeError, match="candidates is a GPU device CSR: a device mask is"):
        model.recommend(user_items=CupyLikeCSR(R), candidates=CupyLikeCSR(R))
    with pytest.raises(TypeError, match="exclude is a GPU device CSR: a device mask is"):
        model.recommend(user_items=R, exclude=CupyLikeCSR(R))
    negative = canonical(-R.toarray(), np.float64)
    with pytest.raises(ValueError, match="user_items must be non-negative"):
        ALS(factors=2, iterations=1).fit(UI).recommend(user_items=CupyLikeCSR(negative))


def test_dot_models_take_one_per_request_mask():
    UI, R = _data()
    model = Popularity().fit(UI)
    with pytest.raises(ValueError, match="excludes one per-request mask, here the seen items"):
        model.recommend(user_items=CupyLikeCSR(R), exclude=R)
    with pytest.raises(ValueError, match="takes candidates as a list of items"):
        model.recommend(user_items=CupyLikeCSR(R), candidates=R)


def test_dot_topk_device_mask_needs_sorted_rows():
    """dot_topk binary-searches each row of its mask: an unsorted device mask is refused."""
    from numba import cuda

    Q = cuda.to_device(np.ones((1, 2)))
    X = cuda.to_device(np.ones((4, 2)))
    unsorted = DuckCSR(np.array([0, 2]), np.array([3, 1]), np.zeros(2), (1, 4))
    with pytest.raises(ValueError, match="exclude has unsorted column indices in a row"):
        fastrec.dot_topk(Q, X, 2, exclude=unsorted)
    with pytest.raises(ValueError, match=r"exclude must have shape \(1, 4\)"):
        fastrec.dot_topk(
            Q, X, 2, exclude=DuckCSR(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0), (1, 5))
        )
