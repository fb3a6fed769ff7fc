"""The CUDA backend against the reference, kernel group by kernel group.

Without a GPU (CI) tests/conftest.py switches on Numba's CUDA simulator before numba is imported,
so these tests run the real kernels, thread by thread, in Python: inputs stay tiny and
hypothesis draws few examples (the simulator costs ~1-5 s per kernel launch). With a GPU the
same tests run on it. Skipped, with the reason, when numba-cuda is not installed.
"""

import importlib
import io

import numpy as np
import pytest
import scipy.sparse as sp
from comparators import assert_csr_close, assert_csr_topk_equal, assert_topk_equal
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dense, raw_csr, scores_and_mask

import fastrec
from fastrec._dispatch import backend_status

_ok, _why = backend_status("cuda")
pytestmark = pytest.mark.skipif(not _ok, reason=f"CUDA backend unavailable: {_why}")

few = settings(max_examples=4)


def _cuda_module():
    from fastrec.kernels import numba_cuda

    return numba_cuda


def _cuda_part(name):
    """A module of the CUDA backend (``topk`` by import path: the package's ``topk`` is the
    kernel function)."""
    return importlib.import_module(f"fastrec.kernels.numba_cuda.{name}")


# ---- scoring --------------------------------------------------------------------------------


@st.composite
def features(draw, max_rows=12, max_cols=40):
    if draw(st.booleans()):
        X = draw(raw_csr(max_rows=max_rows, max_cols=12, min_cols=1, signed=True))
    else:
        X = draw(dense(max_rows=max_rows, max_cols=max_cols, min_cols=1))
    rng = np.random.default_rng(X.shape[0] * 31 + X.shape[1])
    return X, rng.normal(size=X.shape[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_tile_kernels_match_reference(dtype, monkeypatch):
    # Enough rows for the shared-memory tile kernels (many rows), a partial last tile and
    # a partial last column chunk; the row-batch kernels are what the small cases run.
    scoring = _cuda_part("scoring")
    monkeypatch.setattr(scoring, "_use_tile", lambda n_rows: True)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2 * scoring._TILE_ROWS + 7, scoring._TILE_COLS + 9)).astype(dtype)
    w = rng.normal(size=X.shape[1])
    y = (rng.random(X.shape[0]) < 0.4).astype(np.float64)
    np.testing.assert_allclose(
        fastrec.sigmoid_scores(X, w, 0.3, backend="cuda"),
        fastrec.sigmoid_scores(X, w, 0.3, backend="numpy"),
        rtol=1e-5 if dtype == np.float32 else 1e-12,
        atol=1e-7,
    )
    got = fastrec.logistic_loss_grad(X, y, w, 0.3, l2=0.1, backend="cuda")
    want = fastrec.logistic_loss_grad(X, y, w, 0.3, l2=0.1, backend="numpy")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


@few
@given(features(), st.floats(-3, 3))
def test_sigmoid_scores_match_reference(case, b):
    X, w = case
    got = fastrec.sigmoid_scores(X, w, b, backend="cuda")
    want = fastrec.sigmoid_scores(X, w, b, backend="numpy")
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_rows, n_cols", [(45, 3), (9, 300), (12, 64), (7, 133), (2, 1030)])
def test_scoring_rows_shared_by_lanes_or_spanning_a_warp(n_rows, n_cols):
    """Short rows: many rows per warp (groups of lanes); long rows: a whole warp per row."""
    rng = np.random.default_rng(n_cols)
    X = rng.normal(size=(n_rows, n_cols)).astype(np.float32)
    w = rng.normal(size=n_cols) / 4
    y = rng.random(n_rows) < 0.5
    for A in (X, sp.csr_matrix(np.where(rng.random(X.shape) < 0.5, X, 0))):
        np.testing.assert_allclose(
            fastrec.sigmoid_scores(A, w, 0.2, backend="cuda"),
            fastrec.sigmoid_scores(A, w, 0.2, backend="numpy"),
            rtol=1e-5,
            atol=1e-6,
        )
        got = fastrec.logistic_loss_grad(A, y, w, 0.2, backend="cuda")
        want = fastrec.logistic_loss_grad(A, y, w, 0.2, backend="numpy")
        assert got[0] == pytest.approx(want[0], rel=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


def test_sigmoid_extreme_logits_and_out():
    X = np.array([[800.0], [-800.0], [0.0], [40.0], [-40.0]], dtype=np.float32)
    out = np.empty(5, dtype=np.float32)
    got = fastrec.sigmoid_scores(X, np.ones(1), out=out, backend="cuda")
    assert got is out
    np.testing.assert_array_equal(out[:3], [1.0, 0.0, 0.5])
    assert 0 < out[4] < 1e-17


@few
@given(
    features(max_rows=10, max_cols=12), st.floats(-2, 2), st.sampled_from([0.0, 0.5]), st.booleans()
)
def test_logistic_loss_grad_matches_reference(case, b, l2, weighted):
    X, w = case
    rng = np.random.default_rng(X.shape[0])
    y = (rng.random(X.shape[0]) < 0.5).astype(np.int64)
    if X.shape[0] == 0:
        return
    sw = rng.uniform(0.1, 2.0, X.shape[0]) if weighted else None
    got = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend="cuda")
    want = fastrec.logistic_loss_grad(X, y, w, b, l2=l2, sample_weight=sw, backend="numpy")
    assert got[0] == pytest.approx(want[0], rel=1e-12, abs=1e-12)
    assert got[1].dtype == np.float64
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    assert got[2] == pytest.approx(want[2], rel=1e-10, abs=1e-12)


def test_csr_gradient_does_not_depend_on_summation_order():
    """The CSR gradient's atomics add pre-rounded parts whose sums are exact: permuting the rows
    (which reorders every column's additions) gives the same bits, on values spanning 16
    decades where a plain float64 sum would differ in its last bits."""
    rng = np.random.default_rng(9)
    X = sp.random(48, 5, density=0.6, format="csr", random_state=10)
    X.data = rng.choice([-1.0, 1.0], X.nnz) * 10.0 ** rng.uniform(-8, 8, X.nnz)
    y = rng.integers(0, 2, 48)
    w = rng.normal(size=5) * 1e-9
    grads = []
    for perm in (np.arange(48), rng.permutation(48), rng.permutation(48)):
        loss, grad, _ = fastrec.logistic_loss_grad(X[perm], y[perm], w, 0.0, backend="cuda")
        grads.append(grad)
    want = fastrec.logistic_loss_grad(X, y, w, 0.0, backend="numpy")[1]
    np.testing.assert_allclose(grads[0], want, rtol=1e-12)
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])


# ---- ranking --------------------------------------------------------------------------------


@few
@given(scores_and_mask(max_rows=6), st.integers(1, 35))
def test_topk_matches_reference(case, k):
    S, mask = case
    before = S.copy()
    T = _cuda_part("topk")
    old = T._WARP_TOPK_MIN_ROWS
    try:
        for min_rows in (1, 10**9):  # the warp-per-row kernel, then the block-per-row one
            T._WARP_TOPK_MIN_ROWS = min_rows
            got = fastrec.topk(S, k, exclude=mask, backend="cuda")
            want = fastrec.topk(S, k, exclude=mask, backend="numpy")
            assert got.indices.dtype == np.int64 and got.scores.dtype == S.dtype
            # Dense scores are not computed, only moved: the result must match bit for bit.
            assert_topk_equal(got, want, exact=True)
    finally:
        T._WARP_TOPK_MIN_ROWS = old
    np.testing.assert_array_equal(S, before)


@pytest.mark.parametrize("kernel", ["warp", "warp-unpipelined", "block-shared", "block-global"])
def test_topk_long_rows_many_ties_each_kernel(kernel, monkeypatch):
    """Rows several steps long with heavy ties, k below and above the row length: the
    threshold, repeated compactions, the warp-per-row kernel (its loads pipelined or not) and
    both buffer placements of the block-per-row kernel are exercised."""
    D, T = _cuda_part("_device"), _cuda_part("topk")
    monkeypatch.setattr(T, "_WARP_TOPK_MIN_ROWS", 1 if kernel.startswith("warp") else 10**9)
    monkeypatch.setattr(T, "_WARP_PIPELINE", kernel != "warp-unpipelined")
    if kernel == "block-global":
        monkeypatch.setattr(D, "_SHARED_BYTES", 0)
    rng = np.random.default_rng(7)
    S = rng.integers(0, 6, (3, 3 * D._TILE + 17)).astype(np.float64)
    S[1, ::3] = np.nan
    S[2] = np.arange(S.shape[1]) // 2  # the best come last: a compaction at every step
    mask = sp.random(3, S.shape[1], density=0.2, format="csr", random_state=1)
    for k in (40, S.shape[1] + 3):
        got = fastrec.topk(S, k, exclude=mask, backend="cuda")
        want = fastrec.topk(S, k, exclude=mask, backend="numpy")
        assert_topk_equal(got, want, exact=True)


def test_topk_ties_broken_by_smaller_index_and_padding():
    got = fastrec.topk(
        np.array([[1.0, 3.0, 3.0, 1.0, 3.0], [np.nan, -np.inf, 2.0, 0, 0]]), 4, backend="cuda"
    )
    np.testing.assert_array_equal(got.indices, [[1, 2, 4, 0], [2, 3, 4, -1]])
    assert got.scores[1, 3] == -np.inf


@st.composite
def recommend_case(draw):
    UI = draw(raw_csr(max_rows=8, max_cols=10, min_rows=1, min_cols=1))
    n_items = UI.shape[1]
    NB = draw(raw_csr(max_rows=n_items, max_cols=n_items, min_rows=n_items, min_cols=n_items))
    user_ids = draw(st.one_of(st.none(), st.lists(st.integers(0, UI.shape[0] - 1), max_size=6)))
    exclude = None
    if draw(st.booleans()):
        exclude = draw(
            raw_csr(max_rows=UI.shape[0], max_cols=n_items, min_rows=UI.shape[0], min_cols=n_items)
        )
    return UI, NB, user_ids, exclude


@few
@given(recommend_case(), st.integers(1, 12), st.booleans())
def test_recommend_matches_reference(case, n, exclude_seen):
    UI, NB, user_ids, exclude = case
    kw = dict(user_ids=user_ids, exclude_seen=exclude_seen, exclude=exclude)
    got = fastrec.recommend(UI, NB, n, backend="cuda", **kw)
    want = fastrec.recommend(UI, NB, n, backend="numpy", **kw)
    assert got.scores.dtype == want.scores.dtype
    assert_topk_equal(got, want)


def test_recommend_repeated_users_any_order_with_masks():
    rng = np.random.default_rng(11)
    UI = sp.random(9, 40, density=0.3, format="csr", random_state=2, dtype=np.float32)
    NB = sp.random(40, 40, density=0.4, format="csr", random_state=3, dtype=np.float32)
    NB.data[:] = np.round(NB.data * 4)  # ties, and explicit zeros dropped by validation
    exclude = sp.random(9, 40, density=0.2, format="csr", random_state=4)
    user_ids = rng.integers(0, 9, 12)
    for n in (3, 45):
        kw = dict(user_ids=user_ids, exclude=exclude)
        got = fastrec.recommend(UI, NB, n, backend="cuda", **kw)
        want = fastrec.recommend(UI, NB, n, backend="numpy", **kw)
        assert_topk_equal(got, want)


# ---- similarity -----------------------------------------------------------------------------


@few
@given(
    raw_csr(max_rows=12, max_cols=10, signed=True),
    st.integers(1, 14),
    st.sampled_from([0.0, 2.0]),
    st.sampled_from([-1.0, 0.0, 0.3]),
    st.integers(1, 3),
    st.booleans(),
)
def test_cosine_topk_matches_reference(m, k, shrink, min_similarity, min_support, include_self):
    kw = dict(
        shrink=shrink,
        min_similarity=min_similarity,
        min_support=min_support,
        include_self=include_self,
    )
    got = fastrec.cosine_topk(m, k, backend="cuda", **kw)
    want = fastrec.cosine_topk(m, k, backend="numpy", **kw)
    assert_csr_topk_equal(got, want, k)


def test_cosine_topk_rows_are_rows_of_the_full_result():
    """rows= (how fastrec.dask splits the work): bit for bit the rows of the all-rows call."""
    rng = np.random.default_rng(5)
    X = sp.csr_matrix(rng.integers(0, 3, (14, 6)).astype(np.float32))
    full = fastrec.cosine_topk(X, 4, shrink=1.0, backend="cuda")
    rows = [9, 2, 2, 13, 0]
    got = fastrec.cosine_topk(X, 4, shrink=1.0, rows=rows, backend="cuda")
    want = full[rows]
    assert got.shape == (5, 14)
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)


def test_cosine_topk_many_candidates_global_buffer(monkeypatch):
    """Candidates of a row span three selection tiles (so the buffer is compacted mid-row),
    on the global-memory buffer. Every row is a candidate of every row, so a few rows (rows=,
    bit for bit those rows of the whole result) test the same path as all 137 at 1/30 of the
    simulator's time."""
    D = _cuda_part("_device")
    monkeypatch.setattr(D, "_SHARED_BYTES", 0)
    rng = np.random.default_rng(3)
    X = sp.csr_matrix(rng.integers(1, 4, (2 * D._TILE + 9, 2)).astype(np.float32))  # ties
    rows = [0, 70, X.shape[0] - 1]
    got = fastrec.cosine_topk(X, 7, shrink=1.0, rows=rows, backend="cuda")
    want = fastrec.cosine_topk(X, 7, shrink=1.0, backend="numpy")[rows]
    assert_csr_topk_equal(got, want, 7)


@few
@given(
    raw_csr(max_rows=10, max_cols=8, min_cols=1, signed=True),
    st.integers(0, 9),
    st.sampled_from([-1.0, 0.0, 0.2]),
)
def test_cosine_similarity_matches_reference(X, n_other, min_similarity):
    Y = sp.random(n_other, X.shape[1], density=0.4, format="csr", random_state=n_other)
    got = fastrec.cosine_similarity(X, Y, min_similarity=min_similarity, backend="cuda")
    want = fastrec.cosine_similarity(X, Y, min_similarity=min_similarity, backend="numpy")
    assert_csr_close(got, want)
    assert np.all(np.diff(got.indptr) >= 0)
    for r in range(got.shape[0]):  # columns ascending within each row
        assert np.all(np.diff(got.indices[got.indptr[r] : got.indptr[r + 1]]) > 0)


# ---- device arrays, determinism, info -------------------------------------------------------


def test_device_inputs_give_device_results():
    from numba import cuda

    C = _cuda_module()
    rng = np.random.default_rng(1)
    S = rng.random((3, 50)).astype(np.float32)
    idx, val = C.topk(cuda.to_device(S), 5, None, None, 1)
    assert C.is_device_array(idx) and C.is_device_array(val)
    want = fastrec.topk(S, 5, backend="numpy")
    assert_topk_equal((idx.copy_to_host(), val.copy_to_host()), want, exact=True)
    X = rng.random((6, 33))
    out = cuda.device_array(6, dtype=np.float64)
    assert C.sigmoid_dense(cuda.to_device(X), cuda.to_device(np.ones(33)), 0.0, out, 1) is out
    np.testing.assert_allclose(
        out.copy_to_host(), fastrec.sigmoid_scores(X, np.ones(33)), rtol=1e-12
    )


def test_device_csr_inputs_give_device_csr_results():
    from numba import cuda

    C = _cuda_module()
    X = sp.random(12, 7, density=0.4, format="csr", random_state=8, dtype=np.float32)
    args = (X.shape[1], 3, 0.0, 0.0, 1, False, 1)
    on_device = C.cosine_topk(*(cuda.to_device(a) for a in (X.indptr, X.indices, X.data)), *args)
    assert all(C.is_device_array(a) for a in on_device)
    on_host = C.cosine_topk(X.indptr, X.indices, X.data, *args)
    for d, h in zip(on_device, on_host):
        np.testing.assert_array_equal(d.copy_to_host(), h)


def _no_host_copies(d):
    """Make device array ``d`` raise if anything copies it to the host."""

    def refuse(*args, **kwargs):
        raise AssertionError("a device input was copied to the host")

    d.copy_to_host = refuse
    return d


def test_topk_device_scores_auto_runs_on_device_without_host_copies():
    from numba import cuda

    rng = np.random.default_rng(2)
    S = rng.integers(0, 5, (4, 60)).astype(np.float32)  # ties
    S[1, 3] = np.nan
    mask = sp.random(4, 30, density=0.2, format="csr", random_state=3)
    d = _no_host_copies(cuda.to_device(S))
    got = fastrec.topk(d[:, ::2], 7, exclude=mask)  # a strided device view, backend="auto"
    assert _cuda_module().is_device_array(got.indices) and _cuda_module().is_device_array(
        got.scores
    )
    want = fastrec.topk(S[:, ::2], 7, exclude=mask, backend="numpy")
    assert_topk_equal((got.indices.copy_to_host(), got.scores.copy_to_host()), want, exact=True)


def test_device_array_to_a_cpu_backend_is_a_type_error_naming_it():
    from numba import cuda

    X, w = np.ones((3, 2)), np.ones(2)
    with pytest.raises(TypeError, match="scores is a GPU device array.*'numba'"):
        fastrec.topk(cuda.to_device(X), 1, backend="numba")
    with pytest.raises(TypeError, match="w is a GPU device array.*'numpy'"):
        fastrec.sigmoid_scores(X, cuda.to_device(w), backend="numpy")
    with pytest.raises(TypeError, match="sample_weight is a GPU device array"):
        fastrec.logistic_loss_grad(
            X, np.ones(3), w, sample_weight=cuda.to_device(np.ones(3)), backend="cython"
        )
    with pytest.raises(TypeError, match="X is a GPU device array; this call runs on the host"):
        fastrec.models.LogisticCTR().fit(cuda.to_device(X), np.array([0, 1, 1]))


@pytest.mark.parametrize("order", ["C", "F"])
def test_sigmoid_scores_device_inputs_and_out(order):
    from numba import cuda

    rng = np.random.default_rng(4)
    X = np.asarray(rng.normal(size=(37, 5)).astype(np.float32), order=order)
    w = rng.normal(size=5)
    want = fastrec.sigmoid_scores(X, w, 0.25, backend="numpy")
    out = cuda.device_array(37, dtype=np.float32)
    got = fastrec.sigmoid_scores(
        _no_host_copies(cuda.to_device(X)), cuda.to_device(w), 0.25, out=out
    )
    assert got is out
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=1e-5, atol=1e-6)
    # A device w alone also puts the call on the device (host X copied in).
    got = fastrec.sigmoid_scores(X, cuda.to_device(w), 0.25)
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out must have shape"):
        fastrec.sigmoid_scores(cuda.to_device(X), w, out=cuda.device_array(36, np.float32))
    with pytest.raises(TypeError, match="out must be a device array"):
        fastrec.sigmoid_scores(cuda.to_device(X), w, out=np.empty(37, np.float32))
    with pytest.raises(TypeError, match="dtype int64"):
        fastrec.sigmoid_scores(cuda.to_device(np.ones((2, 5), np.int64)), w)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[5, 1] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            fastrec.sigmoid_scores(cuda.to_device(Xb), w)
    with pytest.raises(ValueError, match="w contains NaN"):
        fastrec.sigmoid_scores(cuda.to_device(X), cuda.to_device(np.full(5, np.nan)))


def test_logistic_loss_grad_device_inputs():
    from numba import cuda

    rng = np.random.default_rng(6)
    X = rng.normal(size=(29, 4))
    y = rng.integers(0, 2, 29)
    w, sw = rng.normal(size=4), rng.uniform(0.5, 2.0, 29)
    want = fastrec.logistic_loss_grad(X, y, w, 0.3, l2=0.2, sample_weight=sw, backend="numpy")
    dev = [_no_host_copies(cuda.to_device(a)) for a in (X, y, w, sw)]
    loss, grad, grad_b = fastrec.logistic_loss_grad(
        dev[0], dev[1], dev[2], 0.3, l2=0.2, sample_weight=dev[3]
    )
    assert _cuda_module().is_device_array(grad)
    assert loss == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(grad.copy_to_host(), want[1], rtol=1e-10, atol=1e-12)
    assert grad_b == pytest.approx(want[2], rel=1e-10, abs=1e-12)
    bad_y = y.astype(np.float64)
    bad_y[3] = 0.5
    with pytest.raises(ValueError, match="y must contain only 0 and 1"):
        fastrec.logistic_loss_grad(dev[0], cuda.to_device(bad_y), w)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        fastrec.logistic_loss_grad(dev[0], y, w, sample_weight=cuda.to_device(-sw))
    with pytest.raises(ValueError, match="sample_weight must have a positive sum"):
        fastrec.logistic_loss_grad(dev[0], y, w, sample_weight=cuda.to_device(0 * sw))
    Xb = X.copy()
    Xb[7, 2] = -np.inf
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        fastrec.logistic_loss_grad(cuda.to_device(Xb), y, w)


def test_same_result_every_run():
    X = sp.random(14, 9, density=0.4, format="csr", random_state=5, dtype=np.float32)
    a = fastrec.cosine_topk(X, 4, backend="cuda")
    b = fastrec.cosine_topk(X, 4, backend="cuda")
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_info_says_simulator_or_device():
    C = _cuda_module()
    buf = io.StringIO()
    fastrec.show_config(file=buf)
    line = next(s for s in buf.getvalue().splitlines() if s.strip().startswith("cuda"))
    assert ("simulator" in line) == C._SIM
    assert "available" in line and ("simulator" in line or "GPU" in line)
