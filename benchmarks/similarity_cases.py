"""The cosine top-k contenders of the similarity benchmarks, each as ``run(user_items, k,
n_threads)`` computing every item's k nearest items by cosine over users (item x user rows).

fastrec's backends get ``user_items.T`` (item x user CSR, converted once outside the timing);
the libraries get what their documentation asks for. BLAS is held to one thread by the caller.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def item_users(user_items):
    """The item x user CSR the kernels compare the rows of (built once, outside the timing)."""
    return sp.csr_matrix(user_items.T, dtype=np.float32).tocsr()


def fastrec_backend(backend):
    import fastrec

    def run(X, k, n_threads):
        return fastrec.cosine_topk(X, k, backend=backend, n_threads=n_threads)

    return run


def implicit_all_pairs(X, k, n_threads):
    """implicit.nearest_neighbours.all_pairs_knn on the user x item matrix with unit item
    columns (its argument is the user x item matrix; rows of the result are items)."""
    from implicit.nearest_neighbours import all_pairs_knn
    from sklearn.preprocessing import normalize

    users = normalize(X.astype(np.float64), axis=1).T.tocsr()  # it computes in float64
    return all_pairs_knn(users, K=k, num_threads=n_threads, show_progress=False)


def implicit_cosine_fit(X, k, n_threads):
    """implicit.nearest_neighbours.CosineRecommender(K=k).fit(user_items): normalisation
    included, as a user calls it."""
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=k, num_threads=n_threads)
    model.fit(X.T.tocsr().astype(np.float64), show_progress=False)  # it computes in float64
    return model.similarity


def sparse_dot_topn(X, k, n_threads):
    """sparse_dot_topn.sp_matmul_topn(Xn, Xn.T, top_n=k, sort=True) on the row-normalised
    item x user matrix (normalisation included)."""
    from sklearn.preprocessing import normalize
    from sparse_dot_topn import sp_matmul_topn

    Xn = normalize(X, axis=1).astype(np.float32)
    return sp_matmul_topn(
        Xn, Xn.T.tocsr(), top_n=k, sort=True, n_threads=n_threads if n_threads > 1 else None
    )


def sklearn_blocked(X, k, n_threads, block=1024):
    """scikit-learn cosine_similarity on blocks of rows (dense block x all rows) plus
    argpartition for the top k; single-threaded (scipy's sparse product)."""
    from sklearn.metrics.pairwise import cosine_similarity

    n = X.shape[0]
    Xn_all = X.astype(np.float32)
    indptr = np.zeros(n + 1, np.int64)
    idx_parts, val_parts = [], []
    for r0 in range(0, n, block):
        S = cosine_similarity(Xn_all[r0 : r0 + block], Xn_all, dense_output=True)
        rows = np.arange(S.shape[0])
        S[rows, r0 + rows] = -np.inf  # self excluded
        kk = min(k, n - 1)
        part = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((len(S), 0), int)
        vals = np.take_along_axis(S, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        part = np.take_along_axis(part, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        keep = vals > 0
        indptr[r0 + 1 : r0 + 1 + len(S)] = keep.sum(axis=1)
        idx_parts.append(part[keep])
        val_parts.append(vals[keep])
    np.cumsum(indptr, out=indptr)
    return sp.csr_matrix(
        (np.concatenate(val_parts), np.concatenate(idx_parts), indptr), shape=(n, n)
    )


def reference(X, k, n_threads):
    import fastrec

    return fastrec.cosine_topk(X, k, backend="numpy")


CASES = {
    "fastrec-cython": fastrec_backend("cython"),
    "fastrec-numba": fastrec_backend("numba"),
    "numpy-reference": reference,
    "implicit-all_pairs_knn": implicit_all_pairs,
    "implicit-CosineRecommender.fit": implicit_cosine_fit,
    "sparse_dot_topn": sparse_dot_topn,
    "sklearn-blocked": sklearn_blocked,
}
