"""The end-to-end demo behind ``fastrec demo``: data -> split -> fit -> recommend -> evaluate.

Runs Popularity, ItemKNN, UserKNN, ALS and the Hybrid (CF candidates re-ranked by LogisticCTR)
on the built-in synthetic data (or a MovieLens-style file), and reports per model the fit and
recommend wall times and precision/recall/NDCG/MAP@10 and coverage on a seeded per-user hold-out
(per request: a user, or a (user, context) pair when the data has contexts, as the synthetic
data's daypart), plus AUC and log-loss of the CTR ranker on the requests' candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import data as fdata
from . import metrics
from ._dispatch import available_backends
from .models import ALS, Hybrid, ItemKNN, Popularity, UserKNN

DEMO_USERS, DEMO_ITEMS = 6000, 2500
K = 10
# Stages reported through run(stage=...): loading, splitting, then fit/recommend/evaluate x 5.
N_STAGES = 2 + 3 * 5


@dataclass
class ModelResult:
    name: str
    fit_s: float
    recommend_s: float
    ranking: dict
    coverage: float
    ctr: dict = field(default_factory=dict)


@dataclass
class DemoResult:
    source: str
    n_users: int
    n_items: int
    n_train: int
    n_test: int
    n_requests: int
    models: list
    how: str = ""  # how the data was read (explicit/implicit, threshold, columns)
    n_ctr_requests: int = 0  # requests whose candidates the CTR metrics are computed on


FEEDBACK = ("auto", "explicit", "implicit")


def load(
    path=None,
    *,
    threshold=None,
    feedback="auto",
    columns=None,
    min_count=1,
    seed=0,
    n_users=DEMO_USERS,
    n_items=DEMO_ITEMS,
) -> tuple[fdata.Interactions, str, str]:
    """(data, source, how the file was read): ``synthetic`` by default, or a file read with
    :func:`fastrec.data.read` (``columns``: user/item/value/timestamp names, None = guessed).

    ``feedback``: "explicit" keeps entries whose value (a rating) is > ``threshold`` (default
    3.5); "implicit" takes every event as an interaction (values ignored); "auto" is explicit
    when the value column looks like 1-10 star ratings, else implicit with the values as
    weights (or 1 without a value column). The third element says in words what was done.
    """
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
    if path is None:
        d = fdata.synthetic(n_users, n_items, seed=seed)
        return d, f"synthetic({n_users} x {n_items}, seed={seed})", "implicit clicks"
    columns = dict(columns or {})
    layout = fdata.read_columns(path, **columns)
    d = fdata.read(path, duplicates="last", **columns)  # a re-rated item keeps its latest rating
    value = layout["value"]
    unused = (
        f"; columns not used: {', '.join(layout['unused'])} (--value-col NAME to use one)"
        if layout["unused"]
        else ""
    )
    vals = d.matrix.data
    looks_rated = bool(vals.size and vals.min() >= 0 and 1 < vals.max() <= 10)
    if feedback == "explicit" and value is None:
        raise ValueError(
            f"{path}: explicit feedback needs a value column (--value-col); "
            f"columns: {layout['columns']}"
        )
    if feedback == "explicit" or (feedback == "auto" and value is not None and looks_rated):
        threshold = 3.5 if threshold is None else threshold
        n_events = d.nnz
        d = fdata.to_implicit(d, threshold)
        how = (
            f"explicit: ratings in column {value!r} > {threshold:g} are interactions "
            f"({d.nnz} of {n_events} user-item pairs)"
        )
    elif value is not None and feedback == "auto":
        if threshold is not None:
            raise ValueError(
                "--threshold applies to explicit ratings; column "
                f"{value!r} does not look like 1-10 ratings: add --explicit"
            )
        how = f"implicit: every event is an interaction, weighted by column {value!r}"
    else:
        if threshold is not None:
            raise ValueError("--threshold applies to explicit ratings, not to --implicit")
        ones = d.matrix.copy()
        ones.data[:] = 1
        d = d.with_matrix(ones, d.timestamps, d.contexts)
        how = "implicit: every event is an interaction" + (
            f" (values in {value!r} ignored)" if value is not None else " (no value column)"
        )
    d = fdata.filter_min_counts(d, max(min_count, 2), max(min_count, 1))
    if d.nnz == 0:
        raise ValueError(f"{path}: no interactions left after filtering")
    return d, str(path), how + unused


def models(backend="auto", n_threads=None, verbose=False) -> list:
    """The demo's models, all on the given kernel backend and thread count."""
    kw = {"backend": backend, "n_threads": n_threads}

    def singles():
        return [
            Popularity(**kw),
            ItemKNN(k=100, verbose=verbose, **kw),
            UserKNN(k=50, verbose=verbose, **kw),
        ]

    # ALS's CG solve has no Cython kernel: with backend="cython" it runs on "auto" (Numba).
    als_backend = backend if backend in ("auto", *available_backends("als_cg_update")) else "auto"
    return singles() + [
        ALS(factors=64, iterations=10, backend=als_backend, n_threads=n_threads),
        Hybrid(candidates=singles(), ranker=ranker(backend, n_threads), max_train_users=2000),
    ]


def ranker(backend="auto", n_threads=None):
    """The Hybrid's CTR re-ranker: L2-regularised logistic regression."""
    from .models.logistic import LogisticCTR

    return LogisticCTR(C=1.0, backend=backend, n_threads=n_threads)


@dataclass
class Requests:
    """What is evaluated: one row per user, or per (user, context) when the data has contexts.

    ``users``: the user row of each request; ``context``: None or name -> code per request
    (what Hybrid.recommend takes); ``held_out``: requests x items CSR of the held-out items of
    that user (taken in that context).
    """

    users: np.ndarray
    context: dict | None
    held_out: sp.csr_matrix


def requests(test: fdata.Interactions) -> Requests:
    """The evaluation requests of a held-out split (see :class:`Requests`)."""
    T = test.matrix
    users = np.flatnonzero(np.diff(T.indptr) > 0)
    if not test.contexts:
        return Requests(users, None, T[users])
    names = sorted(test.contexts)
    codes = np.stack([test.contexts[c] for c in names], axis=1)
    sizes = codes.max(axis=0) + 1
    code = np.zeros(T.nnz, dtype=np.int64)
    for c in range(len(names)):
        code = code * int(sizes[c]) + codes[:, c]
    n_codes = int(np.prod(sizes))
    rows = np.repeat(np.arange(T.shape[0], dtype=np.int64), np.diff(T.indptr))
    keys, req_of_entry = np.unique(rows * n_codes + code, return_inverse=True)
    held = sp.csr_matrix(
        (np.ones(T.nnz, dtype=np.float32), (req_of_entry.reshape(-1), T.indices)),
        shape=(keys.size, T.shape[1]),
    )
    req_code = keys % n_codes
    context = {}
    for c in range(len(names) - 1, -1, -1):
        context[names[c]] = req_code % int(sizes[c])
        req_code = req_code // int(sizes[c])
    return Requests(keys // n_codes, context, held)


def run(
    path=None,
    *,
    backend="auto",
    n_threads=None,
    seed=0,
    stage=None,
    threshold=None,
    feedback="auto",
    columns=None,
    n_users=DEMO_USERS,
    n_items=DEMO_ITEMS,
    ctr_requests=3000,
    verbose=False,
) -> DemoResult:
    """Run the demo pipeline; ``stage(description)`` is called as each stage starts.

    ``threshold``, ``feedback``, ``columns``: how a file is read (see :func:`load`).
    ``verbose``: the models' progress bars on long fits and recommends.

    Models are evaluated per request (see :func:`requests`): CF models give a user the same
    list in every context, the Hybrid ranks for the request's context. AUC / log-loss: the
    Hybrid's CTR ranker on the candidates of ``ctr_requests`` seeded random requests.
    """
    stage = stage or (lambda _desc: None)
    stage("loading data")
    d, source, how = load(
        path,
        threshold=threshold,
        feedback=feedback,
        columns=columns,
        seed=seed,
        n_users=n_users,
        n_items=n_items,
    )
    stage("splitting")
    train, test = fdata.per_user_split(d, 0.2, seed=seed + 1)
    req = requests(test)
    uniq, pos = np.unique(req.users, return_inverse=True)
    results = []
    n_ctr = 0
    for model in models(backend, n_threads, verbose):
        name = type(model).__name__
        stage(f"fitting {name}")
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        stage(f"recommending with {name}")
        t0 = time.perf_counter()
        if isinstance(model, Hybrid):
            recs = model.recommend(req.users, n=K, context=req.context).indices
        else:
            recs = model.recommend(uniq, n=K).indices[pos.reshape(-1)]
        rec_s = time.perf_counter() - t0
        stage(f"evaluating {name}")
        res = ModelResult(
            name,
            fit_s,
            rec_s,
            metrics.ranking_metrics(recs, req.held_out, K),
            metrics.coverage(recs, d.n_items),
        )
        if isinstance(model, Hybrid) and model.ranker_ is not None:
            res.ctr, n_ctr = _ctr_metrics(model, req, ctr_requests, seed)
        results.append(res)
    return DemoResult(
        source, d.n_users, d.n_items, train.nnz, test.nnz, req.users.size, results, how, n_ctr
    )


def _ctr_metrics(model, req, n_requests, seed):
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(req.users.size, size=min(n_requests, req.users.size), replace=False))
    context = None if req.context is None else {k: v[pick] for k, v in req.context.items()}
    at, items, p = model.candidate_scores(req.users[pick], context=context)
    H = req.held_out[pick]
    y = fdata.contains(H.indptr, H.indices, H.shape[1], at, items)
    if not y.any() or y.all():
        return {}, 0
    return {"auc": metrics.roc_auc(y, p), "log_loss": metrics.log_loss(y, p)}, pick.size
