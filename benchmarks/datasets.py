"""Seeded synthetic implicit-feedback data for benchmarks: Zipf item popularity, log-normal
user activity, binary values. Sizes: small, mid (50k x 20k x 5M), large (138k x 27k x 20M,
MovieLens-20M's shape). Matrices are cached as .npz under benchmarks/.data/ (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

SIZES = {
    "small": (5_000, 2_000, 200_000),
    "mid": (50_000, 20_000, 5_000_000),
    "large": (138_000, 27_000, 20_000_000),
}
CACHE = Path(__file__).parent / ".data"


def generate(n_users, n_items, nnz, *, seed=0, zipf_a=1.0, activity_sigma=1.4, dtype=np.float32):
    """users x items CSR of ones with about ``nnz`` distinct interactions.

    Item i's popularity is proportional to 1 / (i + 10)^zipf_a (items shuffled so popularity is
    not sorted by id); user activity is log-normal with sigma ``activity_sigma`` (the default
    gives nnz 5.0M, W = sum_u d_u^2 = 2.1e9 on mid and 19.5M, 1.1e10 on large), capped at n_items.
    """
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, activity_sigma, n_users)
    degrees = np.minimum(np.maximum(1, np.round(activity * nnz / activity.sum())), n_items)
    degrees = degrees.astype(np.int64)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** zipf_a
    popularity = rng.permutation(popularity / popularity.sum())
    # Draw with replacement, then drop repeats: popular items repeat, so draw a little extra.
    draws = np.minimum(np.round(degrees * 1.25).astype(np.int64), n_items)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), draws)
    cols = rng.choice(n_items, size=rows.size, p=popularity)
    m = sp.csr_matrix((np.ones(rows.size, dtype=dtype), (rows, cols)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def interactions(size: str = "small", *, seed: int = 0) -> sp.csr_matrix:
    """The users x items benchmark matrix of a named size (cached on disk after the first call)."""
    n_users, n_items, nnz = SIZES[size]
    path = CACHE / f"{size}-seed{seed}.npz"
    if path.exists():
        return sp.load_npz(path).tocsr()
    m = generate(n_users, n_items, nnz, seed=seed)
    CACHE.mkdir(exist_ok=True)
    sp.save_npz(path, m, compressed=False)
    return m


def work(user_items: sp.csr_matrix) -> float:
    """W = sum over users of (items of that user)^2: the multiply-adds of exact item-item cosine."""
    d = np.diff(user_items.indptr).astype(np.float64)
    return float(d @ d)


if __name__ == "__main__":
    for name in SIZES:
        m = interactions(name)
        print(f"{name}: {m.shape[0]} x {m.shape[1]}, nnz {m.nnz}, W {work(m):.3g}")
