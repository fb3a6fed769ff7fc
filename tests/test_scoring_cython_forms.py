"""The Cython CSR sigmoid's forms (AVX-512 gathers, AVX2 gathers, scalar loop), each run here
when the CPU has it: exact against the reference, the same bits for any thread count and for
int32 and int64 indices, and each checking the column indices in its own read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import raw_csr

import fastrec
from fastrec.kernels import form_choice, reference

pytestmark = pytest.mark.skipif(
    "cython" not in compiled_backends("sigmoid_csr"), reason="cython backend unavailable"
)

if "cython" in compiled_backends("sigmoid_csr"):
    from fastrec.kernels._cython import _scoring

    ISAS = list(range(_scoring._csr_isa_available() + 1))  # 0 scalar, 1 AVX2, 2 AVX-512
else:  # pragma: no cover
    ISAS = [0]
ISA_NAMES = {0: "scalar", 1: "avx2", 2: "avx512"}


@pytest.fixture(params=ISAS, ids=lambda isa: ISA_NAMES[isa])
def isa(request):
    form_choice.apply_csr_dot_form_cython()  # the machine's choice first, so the switch holds
    saved = _scoring._set_csr_isa(request.param)
    yield request.param
    _scoring._set_csr_isa(saved)


def _tol(dtype):  # as tests/test_scoring_equivalence.py
    return dict(rtol=3e-7, atol=1e-30) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-300)


def _ragged_csr(seed, dtype, itype, n_rows=600, n_cols=3000):
    """Rows of 0..70 entries (every tail length mod 4, 8 and 16, empty rows), unsorted, with
    duplicates, values from tiny to large."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 71, n_rows)
    lengths[:40] = np.arange(40)
    indptr = np.r_[0, np.cumsum(lengths)].astype(itype)
    indices = rng.integers(0, n_cols, indptr[-1]).astype(itype)
    data = (rng.standard_normal(indptr[-1]) * 10.0 ** rng.integers(-20, 3, indptr[-1])).astype(
        dtype
    )
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


# The fixture holds the form for all examples: resetting it between them is not needed.
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(X=raw_csr(max_rows=40, max_cols=40), seed=st.integers(0, 2**31), b=st.floats(-3, 3))
def test_each_form_equals_reference(isa, X, seed, b):
    w = np.random.default_rng(seed).standard_normal(X.shape[1]).astype(X.dtype)
    got = fastrec.sigmoid_scores(X, w, b, backend="cython")
    np.testing.assert_allclose(
        got, fastrec.sigmoid_scores(X, w, b, backend="numpy"), **_tol(X.dtype)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_form_exact_thread_independent_same_bits_for_both_index_types(isa, dtype):
    X = _ragged_csr(7, dtype, np.int32)
    assert not X.has_canonical_format
    X64 = sp.csr_matrix(
        (X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)), shape=X.shape
    )
    w = np.random.default_rng(8).standard_normal(X.shape[1]).astype(dtype)
    one = fastrec.sigmoid_scores(X, w, 0.3, backend="cython", n_threads=1)
    np.testing.assert_array_equal(
        one, fastrec.sigmoid_scores(X, w, 0.3, backend="cython", n_threads=2)
    )
    np.testing.assert_array_equal(one, fastrec.sigmoid_scores(X64, w, 0.3, backend="cython"))
    np.testing.assert_allclose(
        one, fastrec.sigmoid_scores(X, w, 0.3, backend="numpy"), **_tol(dtype)
    )
    assert one[0] == np.asarray(1 / (1 + np.exp(-0.3)), dtype=dtype)  # the empty row


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("bad", [-1, 3000, np.iinfo(np.int32).max, np.iinfo(np.int32).min])
def test_each_form_checks_the_columns_in_its_own_read(isa, itype, bad, monkeypatch):
    import fastrec._validation as validation

    monkeypatch.setattr(validation, "_indices_within", None)  # no host bounds pass may run
    X = _ragged_csr(9, np.float32, itype)
    w = np.full(X.shape[1], 1e-6, dtype=np.float32)  # no score of exactly 0 or 1: no scan of X
    fastrec.sigmoid_scores(X, w, backend="cython")
    for position in (0, 5, X.nnz - 1, int(X.indptr[41]) - 1):  # row starts and tails
        indices = X.indices.copy()
        indices[position] = bad
        Y = sp.csr_matrix((X.data, indices, X.indptr), shape=X.shape)
        with pytest.raises(ValueError, match=f"column index {bad}, outside \\[0, 3000\\)"):
            fastrec.sigmoid_scores(Y, w, backend="cython")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_sigmoid_forms_same_bits_as_each_other_and_numba(dtype):
    rng = np.random.default_rng(2)
    specials = [
        0.0,
        -0.0,
        17.0,
        -17.0,
        88.0,
        -88.0,
        103.0,
        -104.0,
        745.0,
        -745.0,
        -744.9,
        800.0,
        -800.0,
        1e-300,
        -1e-300,
        np.inf,
        -np.inf,
    ]
    z = np.r_[rng.standard_normal(3000) * 10, rng.standard_normal(3000) * 300, specials]
    outs = []
    for form in ISAS:
        out = np.empty(z.size - form, dtype=dtype)  # lengths not multiples of 4 or 8
        _scoring._sigmoid_block(z[form:], 0.25, out, form)
        outs.append(np.r_[np.full(form, np.nan, dtype=dtype), out])
    for form, out in zip(ISAS[1:], outs[1:]):
        np.testing.assert_array_equal(out[form:], outs[0][form:])
    want = reference.sigmoid(z + 0.25).astype(dtype)
    # a float32 ulp at most; float64: the polynomial exp's 3 ulp (subnormal scores: their
    # absolute spacing)
    rtol, atol = (1.2e-7, 0) if dtype == np.float32 else (1e-15, 1e-322)
    np.testing.assert_allclose(outs[0], want, rtol=rtol, atol=atol)
    if "numba" in compiled_backends("sigmoid_csr"):
        import numba

        from fastrec.kernels.numba_cpu import scoring as nb

        @numba.njit
        def block(z, b, out):
            nb._sigmoid_block(z, b, out)

        got = np.empty(z.size, dtype=dtype)
        block(z, 0.25, got)
        np.testing.assert_array_equal(got, outs[0])


def test_block_sigmoid_float32_is_libm_rounded_but_rarely_one_ulp_off():
    # The float32 scores take a degree-9 polynomial (truncation < 1e-11): a score differs from
    # libm's sigmoid rounded to float32 only where that lies within ~1e-11 of a rounding
    # midpoint (about 5 in a million). A degree-7 one differs in ~3,500 in a million.
    rng = np.random.default_rng(11)
    z = np.r_[rng.uniform(-30, 30, 1_000_000), rng.uniform(-110, -80, 50_000)]
    want = reference.sigmoid(z).astype(np.float32)
    for form in ISAS:
        got = np.empty(z.size, dtype=np.float32)
        _scoring._sigmoid_block(z, 0.0, got, form)
        off = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
        assert off.max() <= 1, ISA_NAMES[form]
        assert np.count_nonzero(off) <= 50, ISA_NAMES[form]  # of 1.05M


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_pipeline_same_bits_for_any_chunk(dtype):
    # The C-order dense sigmoid takes each chunk's sigmoid after the next chunk's logits (two
    # logit buffers in turn): any chunk size, dividing the 256-row blocks or not, must give the
    # default's bits and count, on 1 and 2 threads.
    rng = np.random.default_rng(8)
    X = rng.standard_normal((1000, 37)).astype(dtype)
    X[[3, 500, 999], 0] = 1e4  # scores of exactly 1, counted
    w = (rng.standard_normal(37) / 4).astype(dtype)
    kernel = _scoring.sigmoid_dense
    want = np.empty(1000, dtype=dtype)
    want_bad = kernel(X, w, 0.25, want, 1)
    np.testing.assert_allclose(
        want, reference.sigmoid(X.astype(np.float64) @ w.astype(np.float64) + 0.25), rtol=2e-7
    )
    saved = _scoring._set_dense_chunk(16)
    try:
        for chunk in (1, 3, 7, 16, 32, 100, 255, 256):
            _scoring._set_dense_chunk(chunk)
            for n_threads in (1, 2):
                out = np.full(1000, np.nan, dtype=dtype)
                assert kernel(X, w, 0.25, out, n_threads) == want_bad == 3
                np.testing.assert_array_equal(out, want)
        with pytest.raises(ValueError, match="1..256"):
            _scoring._set_dense_chunk(0)
    finally:
        _scoring._set_dense_chunk(saved)


def test_unavailable_form_rejected():
    with pytest.raises(ValueError, match="not available"):
        _scoring._set_csr_isa(ISAS[-1] + 1)


def test_cython_choice_measured_once_cached_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FASTREC_FORMS", raising=False)
    monkeypatch.setattr(form_choice, "_chosen", {})
    monkeypatch.setattr(form_choice, "_applied", {})
    saved = _scoring._set_csr_isa(0)
    try:
        form = form_choice.apply_csr_dot_form_cython()
        assert form in form_choice.FORMS["csr_dot_cython"]
        why = form_choice.chosen()["csr_dot_cython"][1]
        if len(ISAS) > 1:
            assert why.startswith("measured on this CPU")
        else:
            assert why == "the only form this CPU can run"
        assert _scoring._set_csr_isa(0) == (ISAS[-1] if form == "gather" else 0)
        cache = json.loads(form_choice.cache_path().read_text())
        assert cache[form_choice.cpu_key()]["csr_dot_cython"]["form"] == form
        monkeypatch.setattr(form_choice, "_chosen", {})  # a new process: read, not measured
        monkeypatch.setattr(form_choice, "_applied", {})
        assert form_choice.apply_csr_dot_form_cython() == form
        assert form_choice.chosen()["csr_dot_cython"][1].startswith("cached")
        monkeypatch.setenv("FASTREC_FORMS", "csr_dot_cython=scalar")
        monkeypatch.setattr(form_choice, "_chosen", {})
        monkeypatch.setattr(form_choice, "_applied", {})
        assert form_choice.apply_csr_dot_form_cython() == "scalar"
        assert _scoring._set_csr_isa(0) == 0
    finally:
        _scoring._set_csr_isa(saved)


DENSE_FORMS = [False, True] if 1 in ISAS else [False]


@pytest.mark.parametrize("simd", DENSE_FORMS, ids=lambda f: "avx2" if f else "base")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_c_order_forms_equal_reference(simd, dtype):
    """The dense C-order rows by the AVX2 dot (where the CPU has it) or the base loop: every
    width around the vector steps (4, 8; each split of a last partial step between the two
    accumulators), empty rows of d=0, tiny and huge values; the same bits on 1 and 3 threads;
    F order (its own loop) unaffected."""
    rng = np.random.default_rng(7)
    saved = _scoring._set_dense_simd(simd)
    try:
        for d in [0, 1, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 17, 31, 33, 64, 70]:
            X = rng.standard_normal((700, d)).astype(dtype)
            X[::5] *= 1e-30
            X[1::7] *= 1e20 if dtype == np.float64 else 1e10
            w = rng.standard_normal(d).astype(dtype)
            want = fastrec.sigmoid_scores(X, w, 0.25, backend="numpy")
            got = fastrec.sigmoid_scores(X, w, 0.25, backend="cython", n_threads=1)
            rtol = 1e-6 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300)
            again = fastrec.sigmoid_scores(X, w, 0.25, backend="cython", n_threads=3)
            np.testing.assert_array_equal(again, got)
            fortran = fastrec.sigmoid_scores(np.asfortranarray(X), w, 0.25, backend="cython")
            np.testing.assert_allclose(fortran, want, rtol=rtol, atol=1e-300)
    finally:
        _scoring._set_dense_simd(saved)


def test_dense_simd_switch_refuses_a_cpu_without_it():
    if 1 in ISAS:
        pytest.skip("this CPU has AVX2 with FMA")
    with pytest.raises(ValueError, match="AVX2"):
        _scoring._set_dense_simd(True)
