"""fastrec.models.ALS and its conjugate-gradient solve: backends against the NumPy reference,
determinism, the objective going down, recommend/similar_items, save/load, bad input."""

import importlib
from itertools import pairwise

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrec
from fastrec._dispatch import backend_status
from fastrec.embedding import als_cg_update
from fastrec.models import ALS
from fastrec.models.als import als_loss

SOLVE_BACKENDS = compiled_backends("als_cg_update")  # CUDA: its own tiny cases below


def interactions(n_users=60, n_items=40, density=0.15, seed=0):
    rng = np.random.default_rng(seed)
    M = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    M.data = np.ceil(M.data * 4)  # counts 1..4
    keep = np.ones(n_users)
    keep[0] = 0  # a user with no interactions
    M = sp.csr_matrix(sp.diags(keep) @ M)
    M.eliminate_zeros()
    return M


def _layout(A, layout):
    """A with the same values in C order, F order, or as a strided (non-contiguous) view."""
    if layout == "F":
        return np.asfortranarray(A)
    if layout == "strided":
        wide = np.zeros((A.shape[0], 2 * A.shape[1]), A.dtype)
        wide[:, ::2] = A
        return wide[:, ::2]
    return A


@pytest.mark.parametrize("backend", SOLVE_BACKENDS)
@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    cg_steps=st.integers(1, 4),
    alpha=st.sampled_from([0.0, 1.0, 7.5]),
    n_factors=st.sampled_from([1, 6, 19]),
    layout=st.sampled_from(["C", "F", "strided"]),
    index64=st.booleans(),
)
def test_cg_update_equals_reference(
    backend, seed, dtype, cg_steps, alpha, n_factors, layout, index64
):
    """Random rows (one empty), every dtype, index type and layout; inputs left untouched."""
    rng = np.random.default_rng(seed)
    UI = interactions(30, 20, seed=seed % 1000)
    if index64:
        UI.indptr, UI.indices = UI.indptr.astype(np.int64), UI.indices.astype(np.int64)
    X = _layout(rng.random((30, n_factors)).astype(dtype), layout)
    Y = _layout(rng.random((20, n_factors)).astype(dtype), layout)
    before = X.copy(), Y.copy()
    kw = dict(regularization=0.1, alpha=alpha, cg_steps=cg_steps)
    want = als_cg_update(UI, X, Y, backend="numpy", **kw)
    got = als_cg_update(UI, X, Y, backend=backend, **kw)
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(Y, before[1])
    assert got.dtype == dtype and got.shape == X.shape
    tol = 2e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", SOLVE_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cg_update_same_bits_any_thread_count(backend, dtype):
    """Enough rows (of very different lengths) for every thread to take several blocks."""
    rng = np.random.default_rng(11)
    UI = interactions(700, 120, density=0.08, seed=11)
    X = rng.random((700, 24)).astype(dtype)
    Y = rng.random((120, 24)).astype(dtype)
    outs = [
        als_cg_update(UI, X, Y, regularization=0.05, alpha=3.0, backend=backend, n_threads=t)
        for t in (1, 2, 3)
    ]
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])


@pytest.mark.parametrize("backend", ["numpy", *SOLVE_BACKENDS])
def test_cg_update_without_stored_entries(backend):
    """No interactions at all: rows still move towards 0 (the regularised Gram system)."""
    rng = np.random.default_rng(12)
    UI = sp.csr_matrix((5, 4), dtype=np.float32)
    X, Y = rng.random((5, 3)), rng.random((4, 3))
    got = als_cg_update(UI, X, Y, regularization=0.1, cg_steps=3, backend=backend)
    A = Y.T @ Y + 0.1 * np.eye(3)
    np.testing.assert_allclose(got, np.zeros_like(X), atol=1e-9)  # 3 CG steps solve 3 x 3
    np.testing.assert_allclose(got @ A, 0, atol=1e-9)
    empty = als_cg_update(sp.csr_matrix((0, 4)), X[:0], Y, backend=backend)
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("backend", SOLVE_BACKENDS)
def test_fit_same_bits_any_thread_count(backend):
    UI = interactions(200, 90, seed=2)
    fits = [ALS(factors=8, iterations=3, backend=backend, n_threads=t).fit(UI) for t in (1, 2, 3)]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.user_factors_, fits[0].user_factors_)
        np.testing.assert_array_equal(other.item_factors_, fits[0].item_factors_)


def test_objective_decreases_and_matches_a_direct_sum():
    UI = interactions(50, 30, seed=3)
    model = ALS(factors=5, iterations=6, regularization=0.1, alpha=2.0, progress=True).fit(UI)
    losses = model.loss_history_
    assert len(losses) == 6 and all(b <= a * (1 + 1e-6) for a, b in pairwise(losses))
    X, Y = model.user_factors_.astype(float), model.item_factors_.astype(float)
    R = UI.toarray()
    C = 1 + 2.0 * R
    P = (R > 0).astype(float)
    direct = (np.sum(C * (P - X @ Y.T) ** 2) + 0.1 * (np.sum(X**2) + np.sum(Y**2))) / np.sum(C)
    assert als_loss(UI, X, Y, 0.1, 2.0) == pytest.approx(direct, rel=1e-9)
    assert losses[-1] == pytest.approx(direct, rel=1e-5)


def test_recommend_and_similar_items_through_dot_topk():
    UI = interactions(40, 25, seed=4)
    model = ALS(factors=4, iterations=4).fit(UI)
    users = np.array([3, 0, 7])
    got = model.recommend(users, n=5)
    want = fastrec.dot_topk(
        model.user_factors_[users], model.item_factors_, 5, exclude=UI[users], backend="numpy"
    )
    np.testing.assert_array_equal(got.indices, want.indices)
    seen = set(UI[3].indices)
    assert not seen & set(got.indices[0])
    sim = model.similar_items([2, 9], n=3)
    assert 2 not in sim.indices[0] and 9 not in sim.indices[1]
    assert np.all(sim.scores <= 1 + 1e-6)


def test_save_load_roundtrip_and_corrupt_file_rejected(tmp_path):
    UI = interactions(30, 20, seed=5)
    model = ALS(factors=3, iterations=2).fit(UI)
    path = model.save(tmp_path / "als")
    loaded = ALS.load(path)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)
    np.testing.assert_array_equal(
        loaded.recommend([1, 2], 4).indices, model.recommend([1, 2], 4).indices
    )
    bad = ALS(factors=3, iterations=2).fit(UI)
    bad.item_factors_ = bad.item_factors_[:, :2]
    bad_path = bad.save(tmp_path / "bad")
    with pytest.raises(ValueError, match="item_factors_ must be"):
        ALS.load(bad_path)
    nan = ALS(factors=3, iterations=2).fit(UI)
    nan.user_factors_[0, 0] = np.nan
    with pytest.raises(ValueError, match="user_factors_ contains NaN"):
        ALS.load(nan.save(tmp_path / "nan"))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(factors=0), "factors must be >= 1"),
        (dict(regularization=-1.0), "regularization must be >= 0"),
        (dict(cg_steps=0), "cg_steps must be >= 1"),
        (dict(dtype="float16"), "dtype must be one of"),
    ],
)
def test_bad_parameters_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        ALS(**params).fit(interactions())


def test_negative_interactions_rejected():
    UI = interactions()
    UI.data[0] = -1
    with pytest.raises(ValueError, match="non-negative"):
        ALS().fit(UI)


def test_fold_in_solves_the_user_equations_exactly():
    """Unseen users: the user solve with the item factors fixed, to 1e-5 relative."""
    UI = interactions(80, 30, seed=6)
    model = ALS(factors=6, iterations=5, regularization=0.1, alpha=3.0, dtype="float64").fit(UI)
    R = UI[[5, 9]]
    got = model.fold_in(R)
    Y = model.item_factors_
    for r in range(2):
        lo, hi = R.indptr[r], R.indptr[r + 1]
        cols, c = R.indices[lo:hi], 1 + 3.0 * R.data[lo:hi]
        A = Y.T @ Y + (Y[cols].T * (c - 1)) @ Y[cols] + 0.1 * np.eye(6)
        b = (Y[cols].T * c).sum(axis=1)
        np.testing.assert_allclose(got[r], np.linalg.solve(A, b), rtol=1e-5, atol=1e-8)
    recs = model.recommend(user_items=R, n=4)
    want = fastrec.dot_topk(got, Y, 4, exclude=R, backend="numpy")
    np.testing.assert_array_equal(recs.indices, want.indices)


def test_recommend_with_exclude_and_candidates():
    UI = interactions(40, 25, seed=7)
    model = ALS(factors=4, iterations=3).fit(UI)
    got = model.recommend([1, 2], n=25, candidates=[3, 4, 5, 6])
    for row in got.indices:
        assert set(row[row >= 0]) <= {3, 4, 5, 6}
    got = model.recommend([1, 2], n=25, exclude=[0, 1])
    assert not {0, 1} & set(got.indices.ravel())


def _cython_builds():
    """The builds of the Cython ALS kernel this CPU runs (base, then AVX2, then AVX-512)."""
    try:
        from fastrec.kernels._cython import _als
    except ImportError:
        return []
    builds = ["_als", "_als_avx2", "_als_avx512"]
    return builds[: 1 + ["base", "avx2", "avx512"].index(_als.cpu_isa())]


@pytest.mark.parametrize("build", _cython_builds())
@pytest.mark.parametrize("dtype, index_dtype", [(np.float32, np.int32), (np.float64, np.int64)])
def test_every_cython_build_equals_reference_any_thread_count(build, dtype, index_dtype):
    """Each instruction-set build (not only the one "cython" picks): rows of every length
    modulo four, factors not a multiple of sixteen."""
    from fastrec.kernels import reference

    module = importlib.import_module(f"fastrec.kernels._cython.{build}")
    rng = np.random.default_rng(14)
    UI = interactions(300, 50, density=0.2, seed=14)
    indptr, indices = UI.indptr.astype(index_dtype), UI.indices.astype(index_dtype)
    X = rng.random((300, 21)).astype(dtype)
    Y = rng.random((50, 21)).astype(dtype)
    YtY = Y.T.astype(float) @ Y + 0.1 * np.eye(21)
    args = (indptr, indices, UI.data, X, Y, YtY, 2.0, 3)
    want = reference.als_cg_update(*args, 1)
    one, two = (module.als_cg_update(*args, t) for t in (1, 2))
    np.testing.assert_array_equal(one, two)
    tol = 2e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(one, want, rtol=tol, atol=tol)


# ---- the CUDA solve on Numba's simulator (every simulated thread is a Python thread: tiny) ----

_cuda_ok, _cuda_why = backend_status("cuda")
cuda_only = pytest.mark.skipif(not _cuda_ok, reason=f"CUDA backend unavailable: {_cuda_why}")


@cuda_only
@pytest.mark.parametrize(
    "dtype, n_rows, n_factors, index64",
    [(np.float32, 9, 3, False), (np.float64, 3, 35, True)],  # rows > warps; > 32 factors
)
def test_cg_update_cuda_equals_reference(dtype, n_rows, n_factors, index64):
    rng = np.random.default_rng(n_factors)
    UI = interactions(n_rows, 6, density=0.5, seed=n_factors)  # row 0 empty
    if index64:
        UI.indptr, UI.indices = UI.indptr.astype(np.int64), UI.indices.astype(np.int64)
    X = rng.random((n_rows, n_factors)).astype(dtype)
    Y = _layout(rng.random((6, n_factors)).astype(dtype), "strided")
    kw = dict(regularization=0.1, alpha=2.0, cg_steps=2)
    want = als_cg_update(UI, X, Y, backend="numpy", **kw)
    got = als_cg_update(UI, X, Y, backend="cuda", **kw)
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    tol = 2e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@cuda_only
def test_cg_update_cuda_device_arrays_in_device_arrays_out():
    """The kernel module on device arrays (no stored entries at all): the result stays there."""
    from numba import cuda

    from fastrec.kernels import numba_cuda, reference

    rng = np.random.default_rng(13)
    X, Y = rng.random((2, 3)), rng.random((4, 3))
    YtY = Y.T @ Y + 0.1 * np.eye(3)
    indptr, indices, data = np.zeros(3, np.int32), np.zeros(0, np.int32), np.zeros(0)
    got = numba_cuda.als_cg_update(
        cuda.to_device(indptr),
        indices,
        data,
        cuda.to_device(X),
        cuda.to_device(Y),
        YtY,
        1.0,
        3,
        1,
    )
    assert not isinstance(got, np.ndarray)
    want = reference.als_cg_update(indptr, indices, data, X, Y, YtY, 1.0, 3, 1)
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-9, atol=1e-9)
