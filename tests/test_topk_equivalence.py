"""Every compiled backend of topk and recommend against the NumPy reference (hypothesis).

topk is pure selection, so results must match the reference bit for bit; recommend sums in
float64 in the reference's order and is compared tie-tolerantly. Each backend must also give
bit-identical output for 1, 2 and 3 threads and leave its inputs untouched.
"""

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from comparators import assert_topk_equal
from hypothesis import given
from hypothesis import strategies as st
from strategies import float_dtypes, index_dtypes, raw_csr

import fastrec
from fastrec._dispatch import get_kernel
from fastrec.kernels import topk_forms

BACKENDS = compiled_backends("topk")
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no compiled backend available")


@st.composite
def score_matrices(draw, max_rows=9, max_cols=300):
    """Dense scores with ties, NaN, +inf and -inf sprinkled in; C, F or strided layout; widths
    past several 64-wide blocks so that block skipping is exercised."""
    n_rows = draw(st.integers(0, max_rows))
    n_cols = draw(st.integers(0, max_cols))
    dtype = draw(float_dtypes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["uniform", "ties", "ascending", "descending"]))
    if kind == "uniform":
        S = rng.standard_normal((n_rows, n_cols))
    elif kind == "ties":
        S = rng.integers(-2, 3, (n_rows, n_cols)).astype(float)
    else:  # monotone rows: every entry (or none) beats the running threshold
        S = np.tile(np.arange(n_cols, dtype=float), (n_rows, 1))
        S = S if kind == "ascending" else -S
    S = S.astype(dtype)
    for value, p in ((np.nan, 0.05), (np.inf, 0.02), (-np.inf, 0.05)):
        if draw(st.booleans()):
            S[rng.random(S.shape) < p] = value
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "F":
        S = np.asfortranarray(S)
    elif layout == "strided":
        wide = np.empty((n_rows, 2 * n_cols), dtype=dtype)
        wide[:, ::2] = S
        S = wide[:, ::2]
    return S


@st.composite
def masks(draw, shape):
    """None, or a CSR exclusion pattern of ``shape`` (int32/int64, some rows fully excluded)."""
    if draw(st.booleans()):
        return None
    n_rows, n_cols = shape
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.01, 0.2, 0.8]))
    dense = rng.random(shape) < density
    if n_rows and draw(st.booleans()):
        dense[rng.integers(0, n_rows)] = True  # an all-excluded row
    M = sp.csr_matrix(dense.astype(np.float64))
    itype = draw(index_dtypes)
    M.indptr, M.indices = M.indptr.astype(itype), M.indices.astype(itype)
    return M


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), k=st.integers(1, 70))
def test_topk_equals_reference(backend, data, k):
    S = data.draw(score_matrices())
    M = data.draw(masks(S.shape))
    before = S.copy()
    want = fastrec.topk(S, k, exclude=M, backend="numpy")
    got = fastrec.topk(S, k, exclude=M, backend=backend)
    np.testing.assert_array_equal(S, before)  # NaN == NaN here: scores never written
    assert got.indices.dtype == np.int64 and got.scores.dtype == S.dtype
    assert_topk_equal(got, want, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), k=st.integers(1, 70))
def test_raw_topk_kernel_equals_reference(backend, data, k):
    """The raw kernel on a non-contiguous view and a raw int64/int32 mask, as a model would call
    it: same signature, same output as the reference."""
    S = data.draw(score_matrices())
    M = data.draw(masks(S.shape))
    args = (M.indptr, M.indices) if M is not None else (None, None)
    ref = get_kernel("topk", "numpy")(S, k, *args, 1)
    out = get_kernel("topk", backend)(S, k, *args, 2)
    assert_topk_equal(out, ref, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), k=st.integers(1, 40))
def test_topk_same_result_any_thread_count(backend, data, k):
    S = data.draw(score_matrices(max_rows=20))
    M = data.draw(masks(S.shape))
    runs = [fastrec.topk(S, k, exclude=M, backend=backend, n_threads=t) for t in (1, 2, 3)]
    for other in runs[1:]:
        assert_topk_equal(other, runs[0], exact=True)


def _long_rows(rng, dtype, n=20_000):
    """Four rows of n: random scores, heavy ties, rising, and signed zeros."""
    return np.stack(
        [
            rng.standard_normal(n),
            rng.integers(0, 4, n).astype(float),
            np.arange(n, dtype=float),
            np.where(rng.random(n) < 0.5, -0.0, 0.0),
        ]
    ).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 100, 700])
def test_topk_long_rows(backend, dtype, k):
    """Rows long enough for many rounds of candidate buffering (float32 keeps a 2k buffer cut
    back by a selection): random scores, heavy ties, rising rows, signed zeros (-0.0 == 0.0,
    so the smaller column wins, and the stored -0.0 comes back), with and without a mask."""
    rng = np.random.default_rng(k)
    S = _long_rows(rng, dtype)
    M = sp.csr_matrix(rng.random(S.shape) < 0.3)
    for mask in (None, M):
        want = fastrec.topk(S, k, exclude=mask, backend="numpy")
        got = fastrec.topk(S, k, exclude=mask, backend=backend, n_threads=2)
        assert_topk_equal(got, want, exact=True)
        np.testing.assert_array_equal(np.signbit(got.scores), np.signbit(want.scores))


def _float32_form(backend, compress):
    """The backend's float32 topk row in vector-compress form (AVX-512 CPUs) or as the bit-mask
    walk (elsewhere): both must be exact. Numba's compress form runs on any CPU (LLVM expands
    it), Cython's only with AVX-512."""
    if compress and not topk_forms.compress_available(backend):
        pytest.skip(f"this CPU has no AVX-512: {backend}'s compress form cannot run")
    return topk_forms.float32_form(backend, compress)


FORMS = [(b, c) for b in BACKENDS if b in topk_forms.BACKENDS for c in (False, True)]
FORM_IDS = [f"{b}-{'compress' if c else 'walk'}" for b, c in FORMS]


@pytest.mark.parametrize(("backend", "compress"), FORMS, ids=FORM_IDS)
@given(data=st.data(), k=st.integers(1, 70))
def test_float32_row_forms_equal_reference(backend, compress, data, k):
    S = data.draw(score_matrices()).astype(np.float32)
    M = data.draw(masks(S.shape))
    want = fastrec.topk(S, k, exclude=M, backend="numpy")
    with _float32_form(backend, compress):
        got = fastrec.topk(S, k, exclude=M, backend=backend, n_threads=2)
    assert_topk_equal(got, want, exact=True)


@pytest.mark.parametrize(("backend", "compress"), FORMS, ids=FORM_IDS)
@pytest.mark.parametrize("k", [1, 3, 100, 256, 257, 700])
def test_float32_row_forms_long_rows(backend, compress, k):
    """As test_topk_long_rows, plus a mask that removes most of each row's best entries (the
    compress forms treat blocks holding an excluded column apart)."""
    rng = np.random.default_rng(k)
    S = _long_rows(rng, np.float32)
    best = np.argsort(-S, axis=1, kind="stable")[:, : 2 * k]
    dense = rng.random(S.shape) < 0.3
    np.put_along_axis(dense, best, rng.random(best.shape) < 0.8, axis=1)
    for mask in (None, sp.csr_matrix(dense)):
        want = fastrec.topk(S, k, exclude=mask, backend="numpy")
        with _float32_form(backend, compress):
            got = fastrec.topk(S, k, exclude=mask, backend=backend, n_threads=2)
        assert_topk_equal(got, want, exact=True)
        np.testing.assert_array_equal(np.signbit(got.scores), np.signbit(want.scores))


@st.composite
def bounded_rows(draw):
    """Rows of at least 2k full 64-column blocks (k >= 16), where the compiled rows start from
    the bound of their blocks' maxima, shaped to test it: random, a few positives among zeros
    (fewer than k finite maxima), ties (of entries and of block maxima), every block's
    maximum equal in float32 but not in float64, magnitudes past float32's range, rising
    rows, -inf and NaN; with or without a mask over most of the best entries (blocks whose
    maximum is excluded)."""
    k = draw(st.integers(16, 80))
    # 2k blocks and more; from 8k blocks (and 512) the bound's cut starts from a sampled pivot
    n_cols = draw(st.sampled_from([128, 640])) * k + draw(st.integers(0, 3000))
    n_rows = draw(st.integers(1, 8 if n_cols < 256 * k else 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = ["uniform", "sparse", "ties", "plateau", "huge", "ascending", "descending", "-inf"]
    kind = draw(st.sampled_from(kinds))
    shape = (n_rows, n_cols)
    if kind == "uniform":
        S = rng.standard_normal(shape)
    elif kind == "sparse":  # a few positives among zeros: fewer than k (mostly), or more
        S = np.zeros(shape)
        for row in S:
            c = int(rng.integers(1, k if rng.random() < 0.7 else 3 * k))
            row[rng.choice(n_cols, c, replace=False)] = rng.random(c) + 0.5
    elif kind == "ties":
        S = rng.integers(0, 3, shape).astype(float)
    elif kind == "plateau":  # one entry per block within 1e-12 of 1: one float32 value
        S = rng.random(shape) * 0.5
        first = rng.integers(0, 64, (n_rows, n_cols // 64)) + 64 * np.arange(n_cols // 64)
        np.put_along_axis(S, first, 1 + 1e-12 * rng.random(first.shape), axis=1)
    elif kind == "huge":  # for float64, beyond float32's range at both ends
        S = rng.standard_normal(shape) * 10.0 ** rng.choice([-300, -40, 38, 300], shape)
    elif kind in ("ascending", "descending"):
        S = np.tile(np.arange(n_cols, dtype=float), (n_rows, 1))
        S = S if kind == "ascending" else -S
    else:
        S = np.full(shape, -np.inf)
        few = rng.random(shape) < draw(st.sampled_from([0.001, 0.01]))
        S[few] = rng.random(few.sum())
        S[rng.random(shape) < 0.01] = np.nan
    dtype = draw(float_dtypes)
    with np.errstate(over="ignore"):
        S = S.astype(dtype)
    M = None
    if draw(st.booleans()):  # most of the best 2k excluded, and a sprinkle elsewhere
        order = np.argsort(-np.nan_to_num(S, nan=-np.inf), axis=1, kind="stable")[:, : 2 * k]
        dense = rng.random(shape) < draw(st.sampled_from([0.0, 0.05]))
        np.put_along_axis(dense, order, rng.random(order.shape) < 0.8, axis=1)
        M = sp.csr_matrix(dense)
    return S, M, k


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=bounded_rows())
def test_rows_from_their_block_bound_equal_reference(backend, case):
    S, M, k = case
    want = fastrec.topk(S, k, exclude=M, backend="numpy")
    forms = (
        [None]
        if S.dtype != np.float32 or backend not in topk_forms.BACKENDS
        else [c for c in (False, True) if not c or topk_forms.compress_available(backend)]
    )
    for compress in forms:
        if compress is None:
            got = fastrec.topk(S, k, exclude=M, backend=backend, n_threads=2)
        else:
            with topk_forms.float32_form(backend, compress):
                got = fastrec.topk(S, k, exclude=M, backend=backend, n_threads=2)
        assert_topk_equal(got, want, exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_whose_sampled_pivot_is_too_high_equal_reference(backend, dtype):
    """The blocks a cut of many block maxima samples for its first pivot (every n / 64-th)
    hold the largest maxima, so fewer than k keys lie above the pivot and the cut falls back
    to the whole of them."""
    rng = np.random.default_rng(3)
    n_blocks = 1024
    S = rng.random((3, 64 * n_blocks))
    for t in range(64):
        S[:, 64 * (t * (n_blocks // 64)) + t % 64] = 10 + t
    S = S.astype(dtype)
    want = fastrec.topk(S, 32, backend="numpy")
    assert_topk_equal(fastrec.topk(S, 32, backend=backend), want, exact=True)
    if dtype == np.float32 and topk_forms.compress_available(backend):
        with topk_forms.float32_form(backend, True):
            assert_topk_equal(fastrec.topk(S, 32, backend=backend), want, exact=True)


_BOUND_SWITCH = {
    "cython": "fastrec.kernels._cython._topk",
    "numba": "fastrec.kernels.numba_cpu.topk",
}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in _BOUND_SWITCH])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounded_start_changes_nothing_but_speed(backend, dtype):
    """The same rows with and without the bound: the same output, where each block's
    maximum rounds to the same float32 (float64 rows list every block at the bound, not only
    the k ranked first) and a few rows hold fewer than k finite entries."""
    switch = importlib.import_module(_BOUND_SWITCH[backend])
    rng = np.random.default_rng(7)
    S = rng.random((64, 20_000)) * 0.5
    S[:, ::64] = 1 + 1e-12 * rng.random((64, 20_000 // 64 + 1))
    S[:4] = -np.inf
    S[:4, :30] = 1.0
    S = S.astype(dtype)
    want = fastrec.topk(S, 64, backend="numpy")
    for bounding in (True, False):
        previous = switch._set_bound(bounding)
        try:
            got = fastrec.topk(S, 64, backend=backend, n_threads=2)
        finally:
            switch._set_bound(previous)
        assert_topk_equal(got, want, exact=True)


@st.composite
def recommend_case(draw):
    n_users = draw(st.integers(1, 15))
    n_items = draw(st.integers(1, 20))
    dtype = draw(st.sampled_from([np.float32, np.float64, None]))
    UI = draw(
        raw_csr(min_rows=n_users, max_rows=n_users, min_cols=n_items, max_cols=n_items, dtype=dtype)
    )
    NB = draw(
        raw_csr(min_rows=n_items, max_rows=n_items, min_cols=n_items, max_cols=n_items, signed=True)
    )
    EX = draw(
        st.none() | raw_csr(min_rows=n_users, max_rows=n_users, min_cols=n_items, max_cols=n_items)
    )
    ids = draw(st.none() | st.lists(st.integers(0, n_users - 1), max_size=20))
    return UI, NB, EX, ids


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=recommend_case(), n=st.integers(1, 25), exclude_seen=st.booleans())
def test_recommend_equals_reference(backend, case, n, exclude_seen):
    UI, NB, EX, ids = case
    copies = [m.copy() for m in (UI, NB)]
    kw = dict(user_ids=ids, exclude_seen=exclude_seen, exclude=EX)
    want = fastrec.recommend(UI, NB, n, backend="numpy", **kw)
    got = fastrec.recommend(UI, NB, n, backend=backend, **kw)
    assert got.scores.dtype == want.scores.dtype
    assert_topk_equal(got, want)
    for m, c in zip((UI, NB), copies):
        assert (m != c).nnz == 0
    UN = _user_neighbours(UI)  # user-kNN: the same kernel with the roles swapped
    assert_topk_equal(
        fastrec.recommend_user_based(UI, UN, n, backend=backend, **kw),
        fastrec.recommend_user_based(UI, UN, n, backend="numpy", **kw),
    )


def _user_neighbours(UI):
    """A signed user x user neighbourhood derived from the interactions (shape is all that
    matters to the kernel)."""
    C = sp.csr_matrix(UI, dtype=np.float64)
    G = (C @ C.T).tocsr()
    G.data = np.cos(G.data)  # signed, with cancellations
    return G


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=recommend_case(), n=st.integers(1, 10))
def test_recommend_same_result_any_thread_count(backend, case, n):
    UI, NB, EX, ids = case
    runs = [
        fastrec.recommend(UI, NB, n, user_ids=ids, exclude=EX, backend=backend, n_threads=t)
        for t in (1, 2, 3)
    ]
    for other in runs[1:]:
        assert_topk_equal(other, runs[0], exact=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_nan_and_minus_inf_sums_are_not_candidates(backend):
    """Raw kernel: inf + -inf = NaN and -inf sums are dropped, +inf kept (the reference's rule)."""
    a = (np.array([0, 2]), np.array([0, 1]), np.array([1.0, 1.0]))
    b = (
        np.array([0, 3, 5]),
        np.array([0, 1, 2, 0, 3]),
        np.array([np.inf, -np.inf, np.inf, -np.inf, 2.0]),
    )
    args = (*a, *b, 4, np.array([0]), 4, None, None, None, None, 1)
    want = get_kernel("recommend", "numpy")(*args)
    got = get_kernel("recommend", backend)(*args)
    assert_topk_equal(got, want, exact=True)
    np.testing.assert_array_equal(got[0], [[2, 3, -1, -1]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_recommend_ranks_float32_sums_as_returned(backend):
    """1 + 1e-9 rounds to 1.0 in float32: a tie, so the smaller item comes first."""
    UI = sp.csr_matrix(np.array([[1.0, 1.0, 0, 0]], dtype=np.float32))
    NB = sp.csr_matrix(
        np.array([[0, 0, 1.0, 1.0], [0, 0, 0, 1e-9], [0] * 4, [0] * 4], dtype=np.float32)
    )
    for b in ("numpy", backend):
        got = fastrec.recommend(UI, NB, 2, backend=b)
        np.testing.assert_array_equal(got.indices, [[2, 3]])
        assert got.scores.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_stays_within_the_stated_bound(backend):
    """topk: O(n_rows * k) beyond the scores (no copy, no dense mask); recommend: O(threads *
    n_items + users * n) beyond the inputs (no dense users x items block)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    S = rng.random((2000, 5000))  # 80 MB
    M = sp.random(2000, 5000, density=0.01, format="csr", random_state=1)
    UI = sp.random(5000, 2000, density=0.02, format="csr", random_state=2)
    NB = sp.random(2000, 2000, density=0.05, format="csr", random_state=3)
    fastrec.topk(S[:2], 5, exclude=M[:2], backend=backend)  # compile / warm up outside
    fastrec.recommend(UI[:2], NB, 5, backend=backend)
    tracemalloc.start()
    try:
        fastrec.topk(S, 10, exclude=M, backend=backend, n_threads=2)
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 2000 * 10 * 16 + (2 << 20), peak  # output + 2 MB (vs 80 MB of scores)
        tracemalloc.reset_peak()
        fastrec.recommend(UI, NB, 10, backend=backend, n_threads=2)
        _, peak = tracemalloc.get_traced_memory()
        # output 0.8 MB + per-thread buffers 2 x 2000 x 17 B + 2 MB (dense would be 80 MB)
        assert peak < 5000 * 10 * 16 + 2 * 2001 * 17 + (2 << 20), peak
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bounded_rows_take_memory_per_thread_not_per_row(backend):
    """Rows that start from their block bound hold a key per block (and, in stream form, a
    scratch of as many) per thread: O(threads * n_cols / 64) beyond the output."""
    import tracemalloc

    S = np.random.default_rng(0).random((64, 200_000), dtype=np.float32)  # 51 MB
    fastrec.topk(S[:2], 20, backend=backend)  # compile / warm up outside
    n_blocks = S.shape[1] // 64
    tracemalloc.start()
    try:
        fastrec.topk(S, 20, backend=backend, n_threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # output + 2 threads x 2 x n_blocks keys + 256 KB (per row would be 64 x 50 KB)
    assert peak < 64 * 20 * 12 + 2 * 2 * n_blocks * 8 + (256 << 10), peak


def test_float32_form_switch_restores_and_rejects_bad_input():
    for backend in [b for b in BACKENDS if b in topk_forms.BACKENDS]:
        before = topk_forms.compress_enabled(backend)
        with topk_forms.float32_form(backend, False):
            assert not topk_forms.compress_enabled(backend)
        assert topk_forms.compress_enabled(backend) == before
    with pytest.raises(ValueError, match="backend"):
        topk_forms.compress_enabled("numpy")


@pytest.mark.parametrize("form", ["auto", "base", "avx2", "avx512"])
def test_cython_rank_sort_forms(form):
    """Each form of the Cython rank sort that orders the emitted row (every vector width,
    lengths around the vector widths, keys with the top bit set and clear)."""
    if "cython" not in BACKENDS:
        pytest.skip("no Cython backend")
    from fastrec.kernels._cython import _topk

    rng = np.random.default_rng(3)
    for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 256, 300]:
        keys = np.unique(rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True))
        rng.shuffle(keys)
        try:
            got = _topk._rank_sort_keys(keys, form)
        except ValueError:
            pytest.skip(f"this CPU cannot run the {form} form")
        np.testing.assert_array_equal(got, np.sort(keys)[::-1])
