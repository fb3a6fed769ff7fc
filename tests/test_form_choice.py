"""Code paths chosen on the machine at hand: both forms exact, thread-independent, cached per
CPU."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from backends import compiled_backends

import fastrec
from fastrec.kernels import form_choice

pytestmark = pytest.mark.skipif(
    "numba" not in compiled_backends("sigmoid_csr"), reason="numba backend unavailable"
)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(500, 3000, density=0.02, format="csr", random_state=seed, dtype=np.float64)
    X.data = rng.standard_normal(X.nnz)
    w = rng.standard_normal(3000)
    y = (rng.random(500) < 0.4).astype(float)
    return X, w, y


@pytest.mark.parametrize("form", form_choice.FORMS["csr_dot"])
def test_each_csr_dot_form_is_exact_and_thread_independent(form, monkeypatch):
    monkeypatch.setitem(form_choice._chosen, "csr_dot", (form, "test"))
    X, w, y = _problem()
    want = fastrec.sigmoid_scores(X, w, 0.2, backend="numpy")
    one = fastrec.sigmoid_scores(X, w, 0.2, backend="numba", n_threads=1)
    two = fastrec.sigmoid_scores(X, w, 0.2, backend="numba", n_threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, want, rtol=1e-13)
    g1 = fastrec.logistic_loss_grad(X, y, w, 0.2, l2=0.1, backend="numba", n_threads=1)
    g2 = fastrec.logistic_loss_grad(X, y, w, 0.2, l2=0.1, backend="numba", n_threads=2)
    ref = fastrec.logistic_loss_grad(X, y, w, 0.2, l2=0.1, backend="numpy")
    assert g1[0] == g2[0] and np.array_equal(g1[1], g2[1])
    np.testing.assert_allclose(g1[1], ref[1], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("form", form_choice.FORMS["csr_dot"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csr_dot_form_same_bits_for_int32_and_int64_indices(form, dtype, monkeypatch):
    """int32 indices are gathered with 32-bit lanes (numba_cpu._common.index31), int64 with
    64-bit ones: same loads in the same order, so the same bits, canonical or not."""
    monkeypatch.setitem(form_choice._chosen, "csr_dot", (form, "test"))
    rng = np.random.default_rng(3)
    n_rows, n_cols = 700, 5000
    lengths = rng.integers(0, 90, n_rows)  # empty rows, tails of every length mod 8 and 16
    indptr = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    indices = rng.integers(0, n_cols, indptr[-1]).astype(np.int32)  # unsorted, duplicates
    X = sp.csr_matrix(
        (rng.standard_normal(indptr[-1]).astype(dtype), indices, indptr), shape=(n_rows, n_cols)
    )
    assert not X.has_canonical_format
    X64 = X.copy()
    X64.indices, X64.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    w = rng.standard_normal(n_cols).astype(dtype)
    got = fastrec.sigmoid_scores(X, w, 0.3, backend="numba", n_threads=2)
    np.testing.assert_array_equal(got, fastrec.sigmoid_scores(X64, w, 0.3, backend="numba"))
    ref = fastrec.sigmoid_scores(X, w, 0.3, backend="numpy")
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_choice_is_measured_once_and_cached_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FASTREC_FORMS", raising=False)
    monkeypatch.setattr(form_choice, "_chosen", {})
    form = form_choice.csr_dot_form()
    assert form in form_choice.FORMS["csr_dot"]
    assert form_choice.chosen()["csr_dot"][1].startswith("measured on this CPU")
    saved = json.loads(form_choice.cache_path().read_text())
    assert saved[form_choice.cpu_key()]["csr_dot"]["form"] == form
    monkeypatch.setattr(form_choice, "_chosen", {})  # a new process: read, not measured
    assert form_choice.csr_dot_form() == form
    assert form_choice.chosen()["csr_dot"][1].startswith("cached")


def test_environment_overrides_and_bad_value_is_rejected(monkeypatch):
    monkeypatch.setattr(form_choice, "_chosen", {})
    monkeypatch.setenv("FASTREC_FORMS", "csr_dot=scalar")
    assert form_choice.csr_dot_form() == "scalar"
    assert form_choice.chosen()["csr_dot"] == ("scalar", "FASTREC_FORMS")
    monkeypatch.setattr(form_choice, "_chosen", {})
    monkeypatch.setenv("FASTREC_FORMS", "csr_dot=fast")
    with pytest.raises(ValueError, match="csr_dot must be one of"):
        form_choice.csr_dot_form()


def test_topk_float32_forms_give_identical_results(monkeypatch):
    rng = np.random.default_rng(1)
    S = rng.random((40, 3000), dtype=np.float32)
    S[:, ::7] = S[:, :1]  # ties
    ref = fastrec.topk(S, 50, backend="numpy")
    for backend in compiled_backends("topk"):
        form_choice.apply_topk_form(backend)
        got = fastrec.topk(S, 50, backend=backend)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_array_equal(got.scores, ref.scores)
        assert form_choice.chosen()[f"topk_float32_{backend}"][0] in ("compress", "walk")


@pytest.mark.parametrize("form", ["walk", "compress"])
def test_public_topk_runs_the_chosen_form_and_measures_once(form, monkeypatch):
    """fastrec.topk switches its (fork-safe wrapped) kernel to the form chosen for this CPU;
    after the first call the choice costs a lookup, not a new calibration input."""
    import importlib

    from fastrec.kernels import topk_forms

    if "numba" not in compiled_backends("topk"):
        pytest.skip("numba not available")
    numba_topk = importlib.import_module("fastrec.kernels.numba_cpu.topk")
    monkeypatch.setenv("FASTREC_FORMS", f"topk_float32_numba={form}")
    monkeypatch.setattr(form_choice, "_chosen", {})
    monkeypatch.setattr(form_choice, "_applied", {})
    monkeypatch.setattr(numba_topk, "_COMPRESS", form == "walk")  # the other form
    S = np.random.default_rng(2).random((8, 500), dtype=np.float32)
    ref = fastrec.topk(S, 40, backend="numpy")
    got = fastrec.topk(S, 40, backend="numba")
    assert numba_topk._COMPRESS is (form == "compress")
    assert topk_forms.compress_enabled("numba") is (form == "compress")

    def no_new_measurement(backend):
        raise AssertionError("calibration input rebuilt")

    monkeypatch.setattr(form_choice, "_topk_runs", no_new_measurement)
    fastrec.topk(S, 40, backend="numba")
    np.testing.assert_array_equal(got.indices, ref.indices)
