"""The validation front door: canonical CSR, dtypes, finiteness, counts, threads."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from strategies import canonical, raw_csr

import fastrec
from fastrec._validation import (
    check_csr,
    check_dense,
    check_ids,
    check_k,
    check_n_threads,
    check_scalar,
    usable_cpu_count,
)


def _snapshot(m):
    m = m.tocoo() if m.format == "coo" else m
    parts = [m.data.copy()]
    for name in ("indices", "indptr", "row", "col", "coords"):
        if hasattr(m, name):
            val = getattr(m, name)
            parts.append([v.copy() for v in val] if isinstance(val, tuple) else val.copy())
    return parts


@given(raw_csr())
def test_any_sparse_input_becomes_canonical_csr(m):
    A = check_csr(m, drop_zeros=True)
    ref = canonical(m)
    assert A.shape == ref.shape
    np.testing.assert_array_equal(A.indptr, ref.indptr)
    np.testing.assert_array_equal(A.indices, ref.indices)
    np.testing.assert_allclose(A.data, ref.data, rtol=1e-6)
    assert A.indptr.dtype == A.indices.dtype and A.indptr.dtype in (np.int32, np.int64)
    assert A.sparse_array == isinstance(m, sp.sparray)


@given(raw_csr())
def test_caller_object_untouched(m):
    before = _snapshot(m)
    check_csr(m, drop_zeros=True)
    after = _snapshot(m)
    for b, a in zip(before, after):
        if isinstance(b, list):
            for x, y in zip(b, a):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_kept(dtype):
    m = sp.random(5, 4, density=0.5, format="csr", dtype=dtype, random_state=0)
    assert check_csr(m).dtype == dtype
    assert check_dense(m.toarray()).dtype == dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, np.bool_])
def test_integer_and_bool_converted_to_float64(dtype):
    m = sp.csr_matrix(np.eye(3, dtype=dtype))
    assert check_csr(m).dtype == np.float64
    assert check_dense(np.eye(3, dtype=dtype)).dtype == np.float64


def test_complex_rejected():
    with pytest.raises(TypeError, match="X has dtype complex128"):
        check_csr(sp.csr_matrix(np.eye(2, dtype=complex)))
    with pytest.raises(TypeError, match="scores"):
        check_dense(np.array([["a"]]), "scores")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected(bad):
    m = sp.csr_matrix(np.array([[1.0, bad]]))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        check_csr(m)
    with pytest.raises(ValueError, match="w contains NaN"):
        check_dense(np.array([1.0, bad]), "w", ndim=1)
    assert check_csr(m, allow_nonfinite=True).nnz == 2


def test_int64_indices_kept():
    m = sp.csr_matrix(np.eye(3))
    m.indices = m.indices.astype(np.int64)
    m.indptr = m.indptr.astype(np.int64)
    A = check_csr(m)
    assert A.indices.dtype == np.int64 and A.indptr.dtype == np.int64


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("bad", [None, -1, 50, -(2**31)])
def test_index_bounds_one_read_any_threads(itype, n_threads, bad, monkeypatch):
    """The one-read (unsigned maximum) bounds check, NumPy's and the parallel one, finds a
    negative or too large column index wherever it is, and names it."""
    import fastrec._validation as validation

    monkeypatch.setattr(validation, "_PARALLEL_INDEX_CHECK_MIN", 64)
    rng = np.random.default_rng(0)
    m = sp.random(60, 50, density=0.3, format="csr", random_state=0)
    m.indices, m.indptr = m.indices.astype(itype), m.indptr.astype(itype)
    if bad is None:
        assert check_csr(m, canonical=False, n_threads=n_threads).indices is m.indices
        return
    m.indices[rng.integers(m.nnz)] = bad
    with pytest.raises(ValueError, match=f"column index {bad}, outside"):
        check_csr(m, canonical=False, n_threads=n_threads)


def test_dense_input_to_check_csr_rejected():
    with pytest.raises(TypeError, match="X must be a scipy.sparse"):
        check_csr(np.eye(2))
    with pytest.raises(TypeError, match="X must be a dense array"):
        check_dense(sp.csr_matrix(np.eye(2)))


def test_dense_layouts():
    a = np.arange(12.0).reshape(3, 4)
    assert check_dense(a[:, ::2], order=None).flags.c_contiguous
    assert check_dense(np.asfortranarray(a), order=None).flags.f_contiguous
    assert check_dense(np.asfortranarray(a)).flags.c_contiguous
    with pytest.raises(ValueError, match="must be 2-D"):
        check_dense(np.ones(3))


@pytest.mark.parametrize(
    "k, err",
    [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_bad_k_rejected(k, err):
    with pytest.raises(err, match="k must"):
        check_k(k)
    assert check_k(np.int64(3)) == 3


def test_scalar_checks_name_the_argument():
    with pytest.raises(ValueError, match="shrink must be >= 0"):
        check_scalar(-1.0, "shrink", min_value=0)
    with pytest.raises(ValueError, match="l2 must be finite"):
        check_scalar(np.nan, "l2")
    with pytest.raises(TypeError, match="min_support must be an integer"):
        check_scalar(1.5, "min_support", integer=True)


def test_ids_checked():
    np.testing.assert_array_equal(check_ids([2, 0], "user_ids", 3), [2, 0])
    with pytest.raises(ValueError, match="user_ids contains 3, outside"):
        check_ids([0, 3], "user_ids", 3)
    with pytest.raises(TypeError, match="user_ids must hold integers"):
        check_ids([0.5], "user_ids", 3)


def test_n_threads_semantics_as_scikit_learn():
    n = usable_cpu_count()
    assert n >= 1
    assert check_n_threads(None) == n
    assert check_n_threads(-1) == n
    assert check_n_threads(-2) == max(1, n - 1)
    assert check_n_threads(-1000) == 1
    assert check_n_threads(3) == 3
    with pytest.raises(ValueError, match="n_threads must not be 0"):
        check_n_threads(0)
    with pytest.raises(TypeError, match="n_threads must be an integer"):
        check_n_threads(1.0)


class _ForeignDeviceArray:
    """Stands in for a CuPy/PyTorch array: only the interface is looked at, never the data."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}


def test_device_arrays_recognised_without_touching_them():
    from fastrec._validation import is_device_array

    assert is_device_array(_ForeignDeviceArray())
    for host in (np.ones(3), [1.0], 2.0, None, sp.csr_matrix((2, 2))):
        assert not is_device_array(host)


def test_device_array_to_a_cpu_backend_names_the_argument():
    from fastrec._validation import check_placement

    assert check_placement("numba", X=np.ones(2)) == (False, "numba")
    assert check_placement("auto", X=np.ones(2), w=_ForeignDeviceArray()) == (True, "cuda")
    with pytest.raises(TypeError, match="w is a GPU device array but backend='cython'"):
        check_placement("cython", X=np.ones(2), w=_ForeignDeviceArray())
    with pytest.raises(TypeError, match="X is a GPU device array; this call runs on the host"):
        check_dense(_ForeignDeviceArray(), "X")


def test_small_calls_run_on_fewer_threads(monkeypatch):
    import fastrec._validation as validation
    from fastrec._validation import threads_for

    monkeypatch.setattr(validation, "WORK_PER_THREAD", 1 << 16)
    assert threads_for(8, 0) == 1
    assert threads_for(8, (1 << 16) - 1) == 1
    assert threads_for(8, 3 << 16) == 3
    assert threads_for(2, 1 << 30) == 2
    assert threads_for(1, 1 << 30) == 1


def test_work_per_thread_from_the_environment(monkeypatch):
    from fastrec._validation import _work_per_thread

    monkeypatch.setenv("FASTREC_WORK_PER_THREAD", "1000")
    assert _work_per_thread() == 1000
    monkeypatch.delenv("FASTREC_WORK_PER_THREAD")
    assert _work_per_thread() == 1 << 16
    monkeypatch.setenv("FASTREC_WORK_PER_THREAD", "many")
    with pytest.raises(ValueError, match="FASTREC_WORK_PER_THREAD"):
        _work_per_thread()


def test_a_small_call_asks_its_kernel_for_one_thread(monkeypatch):
    """The public layer passes the reduced count down (the kernel sees n_threads=1)."""
    import fastrec._validation as validation
    import fastrec.scoring as scoring

    monkeypatch.setattr(validation, "WORK_PER_THREAD", 1 << 16)
    seen = []
    real = scoring.get_kernel

    def spy(name, backend="auto"):
        kernel = real(name, backend)

        def call(*args):
            seen.append(args[-1])
            return kernel(*args)

        return call

    monkeypatch.setattr(scoring, "get_kernel", spy)
    X = np.ones((100, 4))
    fastrec.sigmoid_scores(X, np.ones(4), backend="numpy", n_threads=2)
    fastrec.sigmoid_scores(np.ones((1 << 15, 4)), np.ones(4), backend="numpy", n_threads=2)
    assert seen == [1, 2]
