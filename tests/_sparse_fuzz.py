"""Malformed sparse inputs against every public entry point, run in a subprocess by
test_malformed_sparse.py: ``python _sparse_fuzz.py SEED N`` builds N seeded malformed
matrices and passes each, in every sparse argument position, to every public function and
model method that takes arrays. Each call must raise ValueError or TypeError; anything else
(another exception, a result, a crash) ends the process with a status != 0, after printing
the case."""

import sys

import numpy as np
import scipy.sparse as sp

import fastrec
from fastrec import metrics
from fastrec.models import Hybrid, ItemKNN, LogisticCTR, Popularity, UserKNN


def malformed(rng, shape=(6, 5)):
    """A CSR/CSC/COO whose arrays contradict its shape, built without scipy noticing."""
    n, m = shape
    good = sp.random(n, m, density=0.5, format="csr", random_state=int(rng.integers(1 << 30)))
    good.data += 1.0
    kind = int(rng.integers(0, 8))
    bad = good.copy()
    if kind == 0:  # decreasing indptr
        bad.indptr[2], bad.indptr[3] = bad.indptr[3] + 1, bad.indptr[2]
    elif kind == 1:  # column index out of range
        bad.indices[int(rng.integers(bad.nnz))] = m + int(rng.integers(0, 10**6))
    elif kind == 2:  # negative index
        bad.indices[int(rng.integers(bad.nnz))] = -1 - int(rng.integers(0, 5))
    elif kind == 3:  # indptr too short
        bad.indptr = bad.indptr[:-2]
    elif kind == 4:  # indptr beyond the stored arrays
        bad.indptr[-1] = bad.nnz + 7
    elif kind == 5:  # shape smaller than the indices
        bad._shape = (n, max(int(bad.indices.max()), 1))
    elif kind == 6:  # a COO with a row outside the shape
        bad = good.tocoo()
        bad.row[0] = n + 3
    else:  # indptr not starting at 0
        bad.indptr[0] = 1
    return kind, bad


def entry_points(bad):
    """(name, call) for every public function and model method given ``bad``."""
    n, m = bad.shape
    rng = np.random.default_rng(0)
    good = sp.random(n, m, density=0.5, format="csr", random_state=1)
    sq = sp.random(m, m, density=0.5, format="csr", random_state=2)
    usq = sp.random(n, n, density=0.5, format="csr", random_state=3)
    w = rng.standard_normal(m)
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)].astype(float)
    S = rng.random((n, m))
    fitted = ItemKNN(k=3).fit(good)
    ctr = LogisticCTR().fit(good.toarray(), y)
    return [
        ("cosine_topk", lambda: fastrec.cosine_topk(bad, 2)),
        ("cosine_similarity X", lambda: fastrec.cosine_similarity(bad)),
        ("cosine_similarity Y", lambda: fastrec.cosine_similarity(good, bad)),
        ("prepare_cosine_topk", lambda: fastrec.prepare_cosine_topk(bad)),
        ("topk exclude", lambda: fastrec.topk(S, 2, exclude=bad)),
        ("recommend user_items", lambda: fastrec.recommend(bad, sq, 2)),
        ("recommend neighbours", lambda: fastrec.recommend(good, bad, 2)),
        ("recommend exclude", lambda: fastrec.recommend(good, sq, 2, exclude=bad)),
        ("recommend_user_based user_items", lambda: fastrec.recommend_user_based(bad, usq, 2)),
        ("recommend_user_based neighbours", lambda: fastrec.recommend_user_based(good, bad, 2)),
        ("sigmoid_scores", lambda: fastrec.sigmoid_scores(bad, w)),
        ("logistic_loss_grad", lambda: fastrec.logistic_loss_grad(bad, y, w)),
        ("ranking_metrics", lambda: metrics.ranking_metrics(np.zeros((n, 2), int), bad)),
        ("ItemKNN.fit", lambda: ItemKNN(k=2).fit(bad)),
        ("UserKNN.fit", lambda: UserKNN(k=2).fit(bad)),
        ("Popularity.fit", lambda: Popularity().fit(bad)),
        ("Hybrid.fit", lambda: Hybrid(rerank=False).fit(bad)),
        ("LogisticCTR.fit", lambda: LogisticCTR().fit(bad, y)),
        ("LogisticCTR.predict_proba1", lambda: ctr.predict_proba1(bad)),
        ("LogisticCTR.decision_function", lambda: ctr.decision_function(bad)),
        ("ItemKNN.recommend (fitted, bad call)", lambda: fitted.recommend(bad, 2)),
    ]


def main(seed, n_cases):
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        kind, bad = malformed(rng)
        for name, call in entry_points(bad):
            print(f"case {case} kind {kind}: {name}", flush=True)
            try:
                call()
            except (ValueError, TypeError):
                continue
            print("ACCEPTED a malformed matrix", flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
