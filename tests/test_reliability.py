"""Reliability contracts: scale-invariant cosine on every backend, one-class CTR data refused,
the stored-zeros rule, and many Python threads calling the kernels at once."""

import threading

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec
from fastrec.models import ItemKNN, LogisticCTR, Popularity, UserKNN

BACKENDS = fastrec.available_backends("cosine_topk")
BASE = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 1.0], [0.0, 3.0, 4.0]]))
SCALES = [1e-200, 2.0**-1000, 1e-310, 1e200, np.finfo(np.float64).max / 8]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", SCALES)
def test_cosine_is_scale_invariant_for_any_finite_magnitude(backend, scale):
    want_sim = fastrec.cosine_similarity(BASE, backend="numpy").toarray()
    want_top = fastrec.cosine_topk(BASE, 2, backend="numpy").toarray()
    assert want_sim[0, 1] == pytest.approx(0.7302967433402214)
    X = BASE * scale
    sim = fastrec.cosine_similarity(X, backend=backend).toarray()
    top = fastrec.cosine_topk(X, 2, backend=backend).toarray()
    # 1e-310 is subnormal: the input itself lost bits, so the answer may move in the last digits.
    rtol = 1e-6 if scale < np.finfo(np.float64).tiny else 1e-15
    np.testing.assert_allclose(sim, want_sim, rtol=rtol, atol=0)
    np.testing.assert_allclose(top, want_top, rtol=rtol, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_power_of_two_scales_give_the_same_bits(backend):
    want = fastrec.cosine_similarity(BASE, backend=backend)
    for e in (-1000, -300, 300, 1000):
        got = fastrec.cosine_similarity(BASE * 2.0**e, backend=backend)
        np.testing.assert_array_equal(got.data, want.data)


def test_item_knn_on_tiny_values_recommends_like_on_ordinary_ones():
    UI = sp.random(40, 25, density=0.2, format="csr", random_state=3)
    a = ItemKNN(k=5).fit(UI).recommend(np.arange(40), 5)
    b = ItemKNN(k=5).fit(UI * 1e-200).recommend(np.arange(40), 5)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.isfinite(b.scores[b.indices >= 0]).all()


@pytest.mark.parametrize("label", [0, 1])
def test_logistic_ctr_refuses_one_class_data(label):
    X = np.random.default_rng(0).standard_normal((30, 4))
    with pytest.raises(ValueError, match=f"only class {label}"):
        LogisticCTR().fit(X, np.full(30, label))


def test_logistic_ctr_counts_only_rows_with_weight():
    X = np.random.default_rng(0).standard_normal((4, 2))
    with pytest.raises(ValueError, match="only class 0"):
        LogisticCTR().fit(X, [0, 0, 0, 1], sample_weight=[1, 1, 1, 0])


# ---- stored zeros ----------------------------------------------------------------------------


def test_a_stored_zero_interaction_is_not_seen():
    # User 0 "has" item 1 only as an explicitly stored 0: it is not an interaction, so it is
    # neither excluded as seen nor a source of neighbours' scores.
    UI = sp.csr_matrix((np.array([1.0, 0.0]), np.array([0, 1]), np.array([0, 2, 2])), shape=(2, 3))
    NB = sp.csr_matrix(np.array([[0.0, 0.9, 0.5], [0.9, 0.0, 0.7], [0.5, 0.7, 0.0]]))
    for backend in fastrec.available_backends("recommend"):
        res = fastrec.recommend(UI, NB, 3, backend=backend)
        np.testing.assert_array_equal(res.indices[0], [1, 2, -1])
        np.testing.assert_allclose(res.scores[0, :2], [0.9, 0.5])


def test_a_stored_zero_similarity_is_no_candidate():
    UI = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]]))
    NB = sp.csr_matrix(
        (np.array([0.0, 0.4]), np.array([1, 2]), np.array([0, 2, 2, 2])), shape=(3, 3)
    )
    for backend in fastrec.available_backends("recommend"):
        res = fastrec.recommend(UI, NB, 3, backend=backend)
        np.testing.assert_array_equal(res.indices[0], [2, -1, -1])


def test_a_stored_zero_in_an_exclude_mask_still_excludes():
    mask = sp.csr_matrix((np.array([0.0]), np.array([1]), np.array([0, 1])), shape=(1, 3))
    for backend in fastrec.available_backends("topk"):
        res = fastrec.topk(np.array([[1.0, 3.0, 2.0]]), 3, exclude=mask, backend=backend)
        np.testing.assert_array_equal(np.asarray(res.indices)[0], [2, 0, -1])


def test_models_drop_stored_zeros_at_fit():
    UI = sp.csr_matrix(
        (np.array([1.0, 0.0, 1.0]), np.array([0, 1, 1]), np.array([0, 2, 3])), shape=(2, 3)
    )
    model = Popularity().fit(UI)
    np.testing.assert_array_equal(model.item_scores_, [1, 1, 0])
    assert model.user_items_.nnz == 2
    assert UserKNN(k=2).fit(UI).user_items_.nnz == 2
    assert UI.nnz == 3  # the caller's matrix keeps its zero


# ---- many Python threads at once -------------------------------------------------------------


def _calls():
    rng = np.random.default_rng(5)
    UI = sp.random(80, 50, density=0.15, format="csr", random_state=5)
    S = rng.random((60, 400))
    X = rng.standard_normal((90, 6))
    y = (rng.random(90) < 0.5).astype(float)
    w = rng.standard_normal(6)
    nb = fastrec.cosine_topk(UI.T.tocsr(), 6, backend="numpy")
    calls = []
    for b in fastrec.available_backends("topk"):
        if b == "cuda":
            continue
        calls += [
            lambda b=b: fastrec.topk(S, 9, backend=b),
            lambda b=b: fastrec.cosine_topk(UI, 5, backend=b),
            lambda b=b: fastrec.cosine_similarity(UI, backend=b),
            lambda b=b: fastrec.recommend(UI, nb, 6, backend=b),
            lambda b=b: fastrec.recommend_user_based(UI, fastrec.cosine_topk(UI, 4), 6, backend=b),
            lambda b=b: fastrec.sigmoid_scores(X, w, 0.3, backend=b),
            lambda b=b: fastrec.logistic_loss_grad(sp.csr_matrix(X), y, w, 0.1, backend=b),
        ]
    return calls


def _bits(result):
    if sp.issparse(result):
        return b"".join(a.tobytes() for a in (result.indptr, result.indices, result.data))
    if isinstance(result, tuple):
        return b"".join(np.asarray(a).tobytes() for a in result)
    return np.asarray(result).tobytes()


def test_eight_threads_calling_every_kernel_get_the_bits_of_one_thread():
    calls = _calls()
    want = [_bits(c()) for c in calls]
    got = {}
    errors = []
    barrier = threading.Barrier(8)

    def worker(t):
        try:
            barrier.wait(timeout=60)
            order = np.random.default_rng(t).permutation(len(calls))
            got[t] = {int(i): _bits(calls[i]()) for i in order}
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors and not any(th.is_alive() for th in threads)
    for t in range(8):
        assert [got[t][i] for i in range(len(calls))] == want
