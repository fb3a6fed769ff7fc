"""Backend dispatch: explicit requests never fall back; errors say how to get a backend."""

import numpy as np
import pytest

import fastrec
from fastrec import _dispatch
from fastrec._dispatch import BackendUnavailableError, get_kernel


def test_auto_resolves_to_an_available_backend():
    for kernel in _dispatch.AUTO_ORDER:
        assert callable(get_kernel(kernel, "auto"))


def test_numpy_is_the_reference():
    from fastrec.kernels import reference

    assert get_kernel("topk", "numpy") is reference.topk


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        fastrec.topk(np.ones((2, 3)), 1, backend="fortran")
    with pytest.raises(TypeError, match="backend must be a string"):
        fastrec.topk(np.ones((2, 3)), 1, backend=None)


def test_unavailable_backend_raises_with_how_to_get_it(monkeypatch):
    monkeypatch.setitem(_dispatch._MODULES, "cuda", "fastrec.kernels.no_such_module")
    _dispatch._load.cache_clear()
    try:
        with pytest.raises(BackendUnavailableError, match="to get it: pip install"):
            get_kernel("topk", "cuda")
        assert "cuda" not in fastrec.available_backends()
    finally:
        _dispatch._load.cache_clear()


def test_backend_without_the_kernel_raises(monkeypatch):
    monkeypatch.setitem(_dispatch._MODULES, "numba", "fastrec._version")
    _dispatch._load.cache_clear()
    try:
        with pytest.raises(BackendUnavailableError, match="does not implement topk"):
            get_kernel("topk", "numba")
    finally:
        _dispatch._load.cache_clear()


def test_cython_extension_built():
    """CI must fail when the compiled extension did not build: no silent pure-Python install."""
    from fastrec.kernels._cython import _openmp

    assert _openmp.openmp_max_threads() >= 1
    assert "cython" in fastrec.available_backends()


def test_auto_passes_over_cython_dense_sigmoid_without_avx2(monkeypatch):
    """Where the CPU lacks AVX2 with FMA, Cython's dense sigmoid runs its base loop (slower than
    Numba's): "auto" passes over it, and ``fastrec info`` says why; explicit requests still run."""
    pytest.importorskip("fastrec.kernels.numba_cpu.scoring", reason="Numba unavailable")
    _scoring = pytest.importorskip("fastrec.kernels._cython._scoring", reason="Cython build")
    from fastrec import _config

    monkeypatch.setattr(_scoring, "_dense_simd_available", lambda: False)
    assert "AVX2" in _dispatch.auto_pass("cython", "sigmoid_dense")
    assert _dispatch.auto_pass("cython", "sigmoid_csr") == ""
    picked = get_kernel("sigmoid_dense", "auto")
    assert getattr(picked, "__wrapped__", picked) is _dispatch._load("numba").sigmoid_dense
    pick, why = _config.auto_choices()["sigmoid_dense"]
    assert pick == "numba" and "cython passed over: no AVX2" in why
    X = np.random.default_rng(0).standard_normal((50, 9))
    np.testing.assert_allclose(
        fastrec.sigmoid_scores(X, np.ones(9), backend="cython"),
        fastrec.sigmoid_scores(X, np.ones(9), backend="numpy"),
        rtol=1e-12,
    )
