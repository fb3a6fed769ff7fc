"""Device CSR matrices end to end: cosine_topk, cosine_similarity and recommend on GPU-resident
CSR inputs (CuPy, PyTorch, or any indptr/indices/data/shape object), validated on the device.

CuPy and PyTorch are not needed: the inputs are the stand-ins of ``device_inputs`` (Numba
device arrays that refuse ``copy_to_host``, so a host round trip of an input fails the test).
Inputs stay tiny: the simulator costs seconds per kernel launch.
"""

import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
from comparators import assert_csr_topk_equal, assert_topk_equal
from device_inputs import CupyLikeCSR, DuckCSR, TorchLikeCSR, no_host_copy_of
from device_inputs import canonical as _canonical
from device_inputs import device as _device
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import raw_csr

import fastrec
from fastrec._dispatch import backend_status
from fastrec._validation import check_csr

_ok, _why = backend_status("cuda")
pytestmark = pytest.mark.skipif(not _ok, reason=f"CUDA backend unavailable: {_why}")


def _is_device(a):
    from fastrec._validation import is_device_array

    return is_device_array(a)


def _host(a):
    """A result array on the host (results are new device arrays, not the refusing inputs)."""
    return a.copy_to_host()


def _assert_same_csr(got: fastrec.DeviceCSR, want):
    assert isinstance(got, fastrec.DeviceCSR)
    assert all(_is_device(a) for a in (got.indptr, got.indices, got.data))
    assert got.shape == want.shape
    host = got.to_scipy()
    np.testing.assert_array_equal(host.indptr, want.indptr)
    np.testing.assert_array_equal(host.indices, want.indices)
    np.testing.assert_array_equal(host.data, want.data)  # bit for bit
    assert host.dtype == want.dtype


# ---- results: bit for bit those of the same kernels on host inputs --------------------------


def test_cosine_topk_device_csr_same_bits_as_host_input():
    rng = np.random.default_rng(3)
    X = _canonical(np.where(rng.random((11, 6)) < 0.5, rng.integers(1, 4, (11, 6)), 0))
    kw = dict(shrink=1.0, min_support=1)
    for make in (
        TorchLikeCSR,
        lambda m: DuckCSR(m.indptr, m.indices.astype(np.int64), m.data, m.shape),
    ):
        X_device = make(X)
        with no_host_copy_of(X_device):  # nor a view of it (what the spy sees on a GPU)
            got = fastrec.cosine_topk(X_device, 4, **kw)  # backend="auto" runs "cuda"
        _assert_same_csr(got, fastrec.cosine_topk(X, 4, backend="cuda", **kw))
    assert_csr_topk_equal(got.to_scipy(), fastrec.cosine_topk(X, 4, backend="numpy", **kw), 4)


@settings(max_examples=3)
@given(
    raw_csr(max_rows=9, max_cols=7, signed=True),
    st.integers(1, 10),
    st.sampled_from([0.0, 2.0]),
    st.integers(1, 2),
)
def test_cosine_topk_device_csr_random_inputs(m, k, shrink, min_support):
    """Any drawn matrix, made canonical on the host, then given as a device CSR (int32/int64
    indices, float32/float64 values): the bits of the host-input call."""
    A = check_csr(m, drop_zeros=True)
    kw = dict(shrink=shrink, min_support=min_support)
    got = fastrec.cosine_topk(DuckCSR(A.indptr, A.indices, A.data, A.shape), k, **kw)
    _assert_same_csr(got, sp.csr_matrix(fastrec.cosine_topk(m, k, backend="cuda", **kw)))


def test_empty_rows_and_empty_matrices_on_the_device():
    Z = _canonical(sp.csr_matrix((3, 4)))
    got = fastrec.cosine_topk(CupyLikeCSR(Z), 2)
    assert got.shape == (3, 3) and got.nnz == 0
    assert fastrec.cosine_similarity(CupyLikeCSR(Z)).nnz == 0
    best = fastrec.recommend(CupyLikeCSR(Z), CupyLikeCSR(_canonical(sp.csr_matrix((4, 4)))), 2)
    assert np.all(_host(best.indices) == -1) and np.all(_host(best.scores) == -np.inf)
    assert fastrec.cosine_topk(CupyLikeCSR(_canonical(sp.csr_matrix((0, 4)))), 2).shape == (0, 0)


def test_cosine_similarity_device_csr_same_bits_as_host_input():
    rng = np.random.default_rng(4)
    X = _canonical(rng.normal(size=(5, 7)) * (rng.random((5, 7)) < 0.5), np.float64)
    Y = _canonical(rng.normal(size=(6, 7)) * (rng.random((6, 7)) < 0.5), np.float64)
    X_device, Y_device = CupyLikeCSR(X), CupyLikeCSR(Y)
    with no_host_copy_of(X_device, Y_device):
        got = fastrec.cosine_similarity(X_device, Y_device, min_similarity=-1.0)
    _assert_same_csr(got, fastrec.cosine_similarity(X, Y, min_similarity=-1.0, backend="cuda"))
    want = fastrec.cosine_similarity(X, Y, min_similarity=-1.0, backend="numpy")
    np.testing.assert_allclose(got.to_scipy().toarray(), want.toarray(), rtol=1e-12, atol=1e-15)


def test_recommend_device_csr_same_bits_as_host_input_with_masks():
    rng = np.random.default_rng(5)
    UI = _canonical(rng.random((7, 9)) < 0.4)
    NB = _canonical(np.round(rng.random((9, 9)) * 4) * (rng.random((9, 9)) < 0.5))  # ties
    exclude = _canonical(rng.random((7, 9)) < 0.2)
    user_ids = [6, 0, 0, 3]
    inputs = CupyLikeCSR(UI), TorchLikeCSR(NB), CupyLikeCSR(exclude)
    with no_host_copy_of(*inputs):
        got = fastrec.recommend(inputs[0], inputs[1], 5, user_ids=user_ids, exclude=inputs[2])
    assert _is_device(got.indices) and _is_device(got.scores)
    got = (_host(got.indices), _host(got.scores))
    kw = dict(user_ids=user_ids, exclude=exclude)
    assert_topk_equal(got, fastrec.recommend(UI, NB, 5, backend="cuda", **kw), exact=True)
    assert_topk_equal(got, fastrec.recommend(UI, NB, 5, backend="numpy", **kw))
    # A host exclusion mask is accepted beside device matrices (copied in).
    host_mask = fastrec.recommend(
        CupyLikeCSR(UI), CupyLikeCSR(NB), 5, user_ids=user_ids, exclude=exclude
    )
    assert_topk_equal((_host(host_mask.indices), _host(host_mask.scores)), got, exact=True)


def test_recommend_user_based_device_csr_same_bits_as_host_input():
    rng = np.random.default_rng(6)
    UI = _canonical(rng.random((8, 5)) < 0.5)
    NB = _canonical(rng.random((8, 8)) * (rng.random((8, 8)) < 0.4))
    got = fastrec.recommend_user_based(
        DuckCSR(UI.indptr, UI.indices, UI.data, UI.shape), CupyLikeCSR(NB), 3, exclude_seen=False
    )
    got = (_host(got.indices), _host(got.scores))
    want = fastrec.recommend_user_based(UI, NB, 3, exclude_seen=False, backend="cuda")
    assert_topk_equal(got, want, exact=True)
    assert_topk_equal(
        got, fastrec.recommend_user_based(UI, NB, 3, exclude_seen=False, backend="numpy")
    )


def test_device_cosine_topk_feeds_device_recommend_after_sorting_rows():
    """cosine_topk's rows come by similarity; recommend takes them once column-sorted."""
    item_users = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])  # item 0: 2, then 1
    UI = _canonical(item_users.T)
    nb = fastrec.cosine_topk(TorchLikeCSR(_canonical(item_users)), 2)
    with pytest.raises(ValueError, match="item_neighbours has unsorted column indices"):
        fastrec.recommend(CupyLikeCSR(UI), nb, 2)
    host_nb = _canonical(nb.to_scipy(), itype=np.int64)
    got = fastrec.recommend(CupyLikeCSR(UI), CupyLikeCSR(host_nb), 2)
    want = fastrec.recommend(UI, host_nb, 2, backend="cuda")
    assert_topk_equal((_host(got.indices), _host(got.scores)), want, exact=True)


# ---- placement and adapters ------------------------------------------------------------------


def test_cpu_backend_or_mixed_placement_is_a_type_error_naming_the_argument():
    X = _canonical(np.eye(3))
    with pytest.raises(TypeError, match="X is a GPU device sparse matrix.*'cython'"):
        fastrec.cosine_topk(CupyLikeCSR(X), 2, backend="cython")
    with pytest.raises(TypeError, match="item_neighbours is a GPU device sparse matrix.*'numpy'"):
        fastrec.recommend(X, CupyLikeCSR(X), 2, backend="numpy")
    with pytest.raises(TypeError, match="user_items must be a device CSR too"):
        fastrec.recommend(X, CupyLikeCSR(X), 2)
    with pytest.raises(TypeError, match="Y must be a device CSR too"):
        fastrec.cosine_similarity(CupyLikeCSR(X), X)
    with pytest.raises(ValueError, match="weighting='bm25' is computed on the host"):
        fastrec.cosine_topk(CupyLikeCSR(X), 2, weighting="bm25")
    with pytest.raises(ValueError, match="rows= needs a host X"):
        fastrec.cosine_topk(CupyLikeCSR(X), 2, rows=[0])


def test_non_csr_device_layouts_are_type_errors_saying_how_to_convert():
    X = _canonical(np.eye(3))
    with pytest.raises(TypeError, match=r"format 'csc'.*\.tocsr\(\)"):
        fastrec.cosine_topk(CupyLikeCSR(X, fmt="csc"), 2)
    with pytest.raises(TypeError, match=r"torch.sparse_coo.*\.to_sparse_csr\(\)"):
        fastrec.cosine_topk(TorchLikeCSR(X, layout="sparse_coo"), 2)
    half = DuckCSR(X.indptr, X.indices, X.data, X.shape)
    half.data = X.data  # values left on the host
    with pytest.raises(TypeError, match="X.data is a ndarray, not a device array"):
        fastrec.cosine_topk(half, 2)


def test_device_csr_result_converts_to_cupy_and_torch(monkeypatch):
    """to_cupy / to_torch hand the device arrays to the library's constructors (stand-in
    modules record the calls: CuPy and PyTorch are not installed here)."""
    calls = {}
    cupy = types.ModuleType("cupy")
    cupy.asarray = lambda a: ("cupy", a)
    cupyx, cupyx_scipy, cupyx_sparse = (
        types.ModuleType(n) for n in ("cupyx", "cupyx.scipy", "cupyx.scipy.sparse")
    )
    cupyx_sparse.csr_matrix = lambda arrays, shape: calls.setdefault("cupy", (arrays, shape))
    cupyx.scipy, cupyx_scipy.sparse = cupyx_scipy, cupyx_sparse
    torch = types.ModuleType("torch")
    torch.as_tensor = lambda a, device: ("torch", a, device)
    torch.sparse_csr_tensor = lambda *a, size: calls.setdefault("torch", (a, size))
    for name, mod in (
        ("cupy", cupy),
        ("cupyx", cupyx),
        ("cupyx.scipy", cupyx_scipy),
        ("cupyx.scipy.sparse", cupyx_sparse),
        ("torch", torch),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    m = fastrec.DeviceCSR(*(_device(a) for a in ([0, 1], [2], [0.5])), (1, 3))
    m.to_cupy()
    assert calls["cupy"] == ((("cupy", m.data), ("cupy", m.indices), ("cupy", m.indptr)), (1, 3))
    m.to_torch()
    parts = (m.indptr, m.indices, m.data)
    assert calls["torch"] == (tuple(("torch", a, "cuda") for a in parts), (1, 3))


# ---- malformed device CSR: a ValueError/TypeError saying what is wrong -----------------------

_GOOD = dict(indptr=[0, 2, 2, 4], indices=[0, 3, 1, 2], data=[1.0, 2.0, -1.0, 0.5])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(indptr=[1, 2, 2, 4]), ValueError, "X.indptr must start at 0, got 1"),
        (dict(indptr=[0, 3, 2, 4]), ValueError, "X.indptr must be non-decreasing; it decreases 1"),
        (dict(indptr=[0, 2, 2, 3]), ValueError, r"X.indptr must end at nnz = 4 .* got 3"),
        (dict(indices=[0, 4, 1, 2]), ValueError, r"1 column index\(es\) outside \[0, 4\)"),
        (dict(indices=[-1, 3, 1, 2]), ValueError, r"outside \[0, 4\)"),
        (dict(data=[1.0, np.nan, 1.0, 1.0]), ValueError, "X contains NaN or infinity"),
        (dict(data=[1.0, 2.0, np.inf, 1.0]), ValueError, "X contains NaN or infinity"),
        (dict(data=[1.0, 0.0, 1.0, 1.0]), ValueError, r"X stores 1 explicit zero\(s\)"),
        (dict(indices=[3, 0, 1, 2]), ValueError, "X has unsorted column indices in a row"),
        (dict(indices=[0, 3, 2, 2]), ValueError, "X has duplicate entries in a row"),
        (dict(indptr=[0, 2, 4]), ValueError, "X.indptr must have n_rows \\+ 1 = 4 entries"),
        (dict(data=[1.0, 2.0, 3.0]), ValueError, "must have the same length, got 4 and 3"),
        (dict(data=[1, 2, 3, 4]), TypeError, "X.data has dtype int64; expected float32"),
        (dict(indices=[0.0, 3.0, 1.0, 2.0]), TypeError, "X.indices has dtype float64"),
        (dict(shape=(3, 4, 1)), ValueError, "X must have a 2-D shape"),
    ],
)
def test_malformed_device_csr_rejected(change, error, match):
    parts = {**_GOOD, "shape": (3, 4), **change}
    X = DuckCSR(
        np.asarray(parts["indptr"]),
        np.asarray(parts["indices"]),
        np.asarray(parts["data"]),
        parts["shape"],
    )
    with pytest.raises(error, match=match):
        fastrec.cosine_topk(X, 2)


def test_device_checks_count_over_many_blocks():
    """Counts are summed per block, then one atomic per block: exact over a multi-block grid."""
    from fastrec.kernels import numba_cuda as C

    n_rows, width = 40, 9
    indptr = np.arange(n_rows + 1) * width
    indices = np.tile(np.arange(width), n_rows)
    indices[[5, 77, 300]] = indices[[4, 76, 299]]  # three repeats
    indices[[8, 151]] = [12, -3]  # two outside [0, 9), the first also out of order
    data = np.ones(indptr[-1])
    data[[1, 100, 200, 350]] = 0.0
    data[[2, 250]] = np.nan
    c = C.device_csr_counts(_device(indptr), _device(indices), _device(data), width, True, True)
    assert (c.first, c.last, c.decreasing) == (0, indptr[-1], 0)
    assert (c.outside, c.zeros, c.nonfinite) == (2, 4, 2)
    assert (c.repeated, c.unsorted) == (3, 1)  # 6 then -3 (12 ends its row: in order)


def test_exclude_mask_only_needs_a_valid_pattern():
    """Mask values are ignored (zeros, NaN allowed) but its structure is checked."""
    UI = _canonical(np.eye(3))
    NB = _canonical(np.ones((3, 3)))
    mask = DuckCSR(np.array([0, 1, 1, 2]), np.array([2, 0]), np.array([0.0, np.nan]), (3, 3))
    got = fastrec.recommend(CupyLikeCSR(UI), CupyLikeCSR(NB), 3, exclude=mask)
    want = fastrec.recommend(
        UI,
        NB,
        3,
        exclude=sp.csr_matrix(([1, 1], [2, 0], [0, 1, 1, 2]), shape=(3, 3)),
        backend="numpy",
    )
    assert_topk_equal((_host(got.indices), _host(got.scores)), want)
    bad = DuckCSR(np.array([0, 1, 1, 2]), np.array([2, 3]), np.zeros(2), (3, 3))
    with pytest.raises(ValueError, match=r"exclude has 1 column index\(es\) outside"):
        fastrec.recommend(CupyLikeCSR(UI), CupyLikeCSR(NB), 3, exclude=bad)


def test_device_memory_checked_before_the_kernels_allocate(monkeypatch):
    from fastrec._validation_device import DEVICE_SCRATCH_BYTES
    from fastrec.kernels import numba_cuda as C

    assert DEVICE_SCRATCH_BYTES == C._device._SCRATCH_BYTES  # the bound counts the kernels' cap
    monkeypatch.setattr(C, "device_free_memory", lambda: 1 << 20)  # 1 MiB free
    X = CupyLikeCSR(_canonical(np.eye(3)))
    with pytest.raises(MemoryError, match="cosine_topk needs about 1.00 GiB of GPU memory"):
        fastrec.cosine_topk(X, 2)
    with pytest.raises(MemoryError, match="recommend needs about"):
        fastrec.recommend(X, X, 2)
