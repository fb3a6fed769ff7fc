"""Scale-out on Dask: cosine neighbourhoods and batch recommendation over row blocks on a
``dask.distributed`` cluster, bit for bit the single-machine results.

How it works::

    client                                   workers (each holds one copy of the inputs)
    ------                                   -------------------------------------------
    validate + weight once  --scatter(broadcast)-->  X (or user_items, neighbours, model);
    (cosine_topk: + prepare)                          for cosine_topk the PreparedCosine
    split rows into blocks  --submit one task per block-->  the local public kernel on
                                                             that block: cosine_topk(P, rows=),
                                                             cosine_similarity(X[r0:r1], Y),
                                                             recommend(user_ids=block)
    assemble blocks in order  <--results (or one Parquet file per block)--

cosine_topk's O(nnz) set-up (row norms, transpose, row work) is done once, on the client
(:func:`fastrec.similarity.prepare_cosine_topk`), and the prepared matrix is what is
scattered: a task then costs only its own rows' work, and its output is O(block_rows * k).

A row's result depends only on that row and the whole (scattered) matrix, so the blocks
assembled in order are the local call's result, for any block size and any number of
workers (``tests/test_dask.py`` and ``tests/test_similarity_rows.py`` check it bit for bit).
A worker lost mid-run is handled by the scheduler: its tasks run again on the other workers,
which already hold the scattered inputs (up to ``distributed.scheduler.allowed-failures``
times); ``retries`` re-runs tasks that raised. Progress is Dask's own: the dashboard, or
``progress=True`` for :func:`distributed.progress`.

The inputs must fit in one worker's memory (they are replicated, not partitioned); what is
spread is the work and the output. Optional extra: ``pip install 'fastrec[dask]'``.
"""

from __future__ import annotations

import math
import os
import uuid

try:
    import dask
    import distributed
    import pandas as pd
except ImportError as exc:  # tests/test_dask_optional.py runs this path
    raise ImportError(
        "fastrec.dask needs the optional 'dask' extra (dask[distributed], pandas): "
        "pip install 'fastrec[dask]'"
    ) from exc

import numpy as np
import scipy.sparse as sp

from . import embedding as _embedding
from . import similarity as _similarity
from ._dispatch import BACKENDS
from ._validation import (
    CSR,
    check_csr,
    check_ids,
    check_k,
    check_n_threads,
    check_scalar,
    make_csr,
)
from .topk import TopK
from .topk import recommend as _local_recommend

__all__ = ["cosine_similarity", "cosine_topk", "dot_topk", "interactions_to_csr", "recommend"]

# Default number of blocks per worker thread: enough for the scheduler to balance rows of
# uneven cost and to re-run little after a lost worker.
BLOCKS_PER_THREAD = 4
INTERACTION_COLUMNS = ("user", "item", "weight")


# ---- inputs -------------------------------------------------------------------------------


def _client(client) -> distributed.Client:
    """The client to use (``None``: the current default client), checked to be running."""
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            raise ValueError(
                "client=None but no Dask client exists: pass client=distributed.Client(...) "
                "(a LocalCluster on one machine, or Client('tcp://scheduler:8786'))"
            ) from None
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client is not running (status {client.status!r}): it was closed")
    if not client.nthreads():  # the inputs are scattered to workers: there must be some
        raise ValueError(
            "the Dask cluster has no workers: start some (or client.wait_for_workers(n))"
        )
    return client


def _check_backend(backend) -> str:
    # Availability is a property of the workers, checked there; only the name is checked here.
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


def _check_task_threads(n_threads):
    """Threads per task, validated here but resolved (None = all cores) on the worker."""
    check_n_threads(n_threads)
    return n_threads


def _blocks(n: int, block_rows, client, name: str) -> list[tuple[int, int]]:
    """Contiguous [r0, r1) row ranges covering 0..n."""
    if block_rows is None:
        threads = max(1, sum(client.nthreads().values()))
        block_rows = max(1, math.ceil(n / (BLOCKS_PER_THREAD * threads)))
    else:
        block_rows = check_scalar(block_rows, name, min_value=1, integer=True)
    return [(r0, min(n, r0 + block_rows)) for r0 in range(0, n, block_rows)]


def _is_dask_dataframe(X) -> bool:
    try:
        import dask.dataframe as dd
    except ImportError:  # dask without its dataframe part: X cannot be one
        return False
    return isinstance(X, dd.DataFrame)


def _as_csr(X, name, client, columns, n_cols=None) -> CSR:
    """A scipy sparse matrix or a Dask DataFrame of interactions -> canonical CSR."""
    if _is_dask_dataframe(X):
        shape = None if n_cols is None else (None, n_cols)
        X = interactions_to_csr(X, columns=columns, shape=shape, client=client)
    return check_csr(X, name, drop_zeros=True)


def _partition_csr(part, columns, shape, dtype):
    r, c, v = columns
    rows = part[r].to_numpy(dtype=np.int64)
    cols = part[c].to_numpy(dtype=np.int64)
    vals = np.ones(len(part), dtype) if v is None else part[v].to_numpy(dtype=dtype)
    m = sp.csr_matrix((vals, (rows, cols)), shape=shape)
    m.sum_duplicates()
    return m


def _sum_csr(parts):
    total = parts[0]
    for m in parts[1:]:
        total = total + m
    return total


def interactions_to_csr(df, *, columns=INTERACTION_COLUMNS, shape=None, client=None):
    """A Dask DataFrame of interactions -> an in-memory scipy CSR, built on the cluster.

    ``columns`` = (row column, column column, value column): by default ("user", "item",
    "weight") gives the users x items matrix; ("item", "user", "weight") its transpose (the
    rows to compare for item-item neighbours). The value column may be None (every
    interaction counts 1.0). Ids must be integers >= 0, used as row/column indices; ``shape``
    (either entry may be None) defaults to max id + 1. Duplicate (row, column) pairs are
    summed, in an order that depends on the partitioning (exact for integer-valued weights).
    Each partition becomes a sparse matrix on a worker; they are summed in a tree and the
    result, O(nnz) memory, comes back to the client.
    """
    client = _client(client)
    if not _is_dask_dataframe(df):
        raise TypeError(f"df must be a dask.dataframe.DataFrame, got {type(df).__name__}")
    if not (isinstance(columns, (tuple, list)) and len(columns) == 3):
        raise ValueError(f"columns must be (rows, cols, values), got {columns!r}")
    r, c, v = columns
    for col in (r, c) if v is None else (r, c, v):
        if col not in df.columns:
            raise ValueError(f"df has no column {col!r} (columns={list(columns)!r})")
    for col in (r, c):
        if df[col].dtype.kind not in "iu":
            raise TypeError(f"column {col!r} must hold integer ids, got dtype {df[col].dtype}")
    if v is None:
        dtype = np.dtype(np.float64)
    else:
        dtype = df[v].dtype
        if dtype.kind not in "biuf":
            raise TypeError(f"column {v!r} must be numeric, got dtype {dtype}")
        dtype = np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)
    lo_r, hi_r, lo_c, hi_c = client.compute(
        [df[r].min(), df[r].max(), df[c].min(), df[c].max()], sync=True
    )
    for col, lo in ((r, lo_r), (c, lo_c)):
        if lo < 0:  # an empty frame gives NaN here, which compares False
            raise ValueError(f"column {col!r} contains negative ids")
    # max + 1, or 0 for an empty frame (NaN != NaN)
    inferred = tuple(int(hi) + 1 if hi == hi else 0 for hi in (hi_r, hi_c))
    shape = (None, None) if shape is None else tuple(shape)
    shape = tuple(inf if s is None else int(s) for s, inf in zip(shape, inferred))
    if shape[0] < inferred[0] or shape[1] < inferred[1]:
        raise ValueError(f"shape {shape} is too small: the ids need at least {inferred}")
    parts = [dask.delayed(_partition_csr)(p, (r, c, v), shape, dtype) for p in df.to_delayed()]
    while len(parts) > 1:  # a tree of sums, 8 at a time: no task receives every partition
        parts = [dask.delayed(_sum_csr)(parts[i : i + 8]) for i in range(0, len(parts), 8)]
    return client.compute(parts[0], sync=True)


# ---- running blocks -----------------------------------------------------------------------


def _scatter(client, obj):
    """One copy of ``obj`` on every worker (a future; released by the caller)."""
    return client.scatter(obj, broadcast=True, hash=False)


def _check_retries(retries) -> int:
    return check_scalar(retries, "retries", min_value=0, integer=True)


def _run_blocks(client, name, fn, shared, blocks, extra, retries, progress):
    """Run fn(*shared, *block, *extra) per block (a tuple of per-block arguments); return
    the results in block order."""
    tag = f"fastrec-{name}-{uuid.uuid4().hex[:8]}"
    futures = [
        client.submit(fn, *shared, *block, *extra, key=(tag, i), retries=retries, pure=False)
        for i, block in enumerate(blocks)
    ]
    results = [None] * len(futures)
    try:
        if progress:
            distributed.progress(futures)
        position = {f.key: i for i, f in enumerate(futures)}
        for future, result in distributed.as_completed(futures, with_results=True):
            results[position[future.key]] = result
    except BaseException:
        client.cancel(futures)  # a failed block fails the call: stop the others
        raise
    return results


def _release(client, futures):
    client.cancel([f for f in futures if f is not None])


def _stack_csr(parts, n_cols, dtype, sparse_array):
    """Row blocks of (indptr, indices, data) -> one CSR, exactly as the local kernel returns."""
    counts = [np.diff(ip) for ip, _, _ in parts]
    indptr = np.zeros(sum(len(c) for c in counts) + 1, np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    indices = np.concatenate([ix for _, ix, _ in parts] + [np.zeros(0, np.int64)])
    data = np.concatenate([d for _, _, d in parts] + [np.zeros(0, dtype)])
    data = data.astype(dtype, copy=False)
    return make_csr(
        indptr, indices.astype(np.int64, copy=False), data, (len(indptr) - 1, n_cols), sparse_array
    )


# ---- similarity ---------------------------------------------------------------------------


def _cosine_topk_block(P: _similarity.PreparedCosine, r0, r1, k, opts):
    S = _similarity.cosine_topk(P, k, rows=np.arange(r0, r1), **opts)
    return S.indptr, S.indices, S.data


def cosine_topk(
    X,
    k,
    *,
    client=None,
    block_rows=None,
    shrink=0.0,
    min_similarity=0.0,
    min_support=1,
    include_self=False,
    weighting=None,
    bm25_k1=100.0,
    bm25_b=0.8,
    backend="auto",
    n_threads=1,
    retries=2,
    progress=False,
    columns=INTERACTION_COLUMNS,
):
    """:func:`fastrec.cosine_topk` on a Dask cluster: the same n x n CSR, bit for bit.

    ``X``: a scipy sparse matrix, or a Dask DataFrame of interactions whose ``columns``
    (row, column, value) say which ids are the rows compared (see
    :func:`interactions_to_csr`). The matrix is validated, weighted and prepared
    (normalised, transposed: :func:`fastrec.prepare_cosine_topk`, for ``backend``) once
    here, scattered once to every worker, and each task computes ``block_rows`` rows
    (default: about 4 blocks per worker thread) with ``fastrec.cosine_topk(prepared,
    rows=...)``. ``n_threads``: threads per task (default 1, as a worker already runs one
    task per thread). ``retries``: re-runs of a task that raised; lost workers are handled by
    the scheduler. ``progress``: show Dask's progress bar. Memory per worker: the prepared
    matrix (``PreparedCosine.nbytes``: 8-16 bytes per stored value when binary, 24-32
    otherwise) plus each running task's accumulators (O(n) per thread) and block result
    (O(block_rows * k)); the client holds X, the prepared matrix while the call runs, and
    the result, O(n * k). Client and workers must have the same fastrec build (the prepared
    arrays are the backend's). Other arguments, result and tie rule: as
    :func:`fastrec.cosine_topk`.
    """
    client = _client(client)
    retries = _check_retries(retries)
    k = check_k(k)
    opts = dict(
        shrink=check_scalar(shrink, "shrink", min_value=0),
        min_similarity=check_scalar(min_similarity, "min_similarity"),
        min_support=check_scalar(min_support, "min_support", min_value=1, integer=True),
        include_self=bool(include_self),
        n_threads=_check_task_threads(n_threads),
    )
    backend = _check_backend(backend)
    _similarity._check_weighting(weighting, bm25_k1, bm25_b)
    A = _as_csr(X, "X", client, columns)  # after the cheap checks: it may build from a frame
    blocks = _blocks(A.shape[0], block_rows, client, "block_rows")
    # Weighting needs every row (document frequencies), and the norms and the transpose the
    # whole matrix: done once, here, and shipped prepared.
    P = _similarity._prepare(A, weighting, bm25_k1, bm25_b, backend, check_n_threads(None))
    shared = _scatter(client, P)
    try:
        parts = _run_blocks(
            client,
            "cosine-topk",
            _cosine_topk_block,
            [shared],
            blocks,
            (k, opts),
            retries,
            progress,
        )
    finally:
        _release(client, [shared])
    return _stack_csr(parts, A.shape[0], P.dtype, A.sparse_array)


def _cosine_similarity_block(P, r0, r1, min_similarity, n_threads):
    S = _similarity._cosine_similarity_block(P, r0, r1, min_similarity, check_n_threads(n_threads))
    return S.indptr, S.indices, S.data


def cosine_similarity(
    X,
    Y=None,
    *,
    client=None,
    block_rows=None,
    min_similarity=0.0,
    backend="auto",
    n_threads=1,
    retries=2,
    progress=False,
    columns=INTERACTION_COLUMNS,
):
    """:func:`fastrec.cosine_similarity` on a Dask cluster: the same CSR, bit for bit.

    X and Y are validated, and Y prepared (row scales, transpose) once here, with the choice
    of the binary product made over the whole of X as in the local call; X and the prepared Y
    are scattered once to every worker, and each task computes the rows of a block of
    ``block_rows`` rows of X. Dask DataFrames are accepted as in :func:`cosine_topk`. Memory
    per worker: X and the prepared Y plus the block results it holds; the client holds the
    whole result, which can be up to n x p: use ``min_similarity``, or :func:`cosine_topk`
    for large inputs.
    """
    client = _client(client)
    retries = _check_retries(retries)
    A = _as_csr(X, "X", client, columns)
    B = None if Y is None else _as_csr(Y, "Y", client, columns, n_cols=A.shape[1])
    if B is not None and B.shape[1] != A.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns, got {A.shape[1]} and {B.shape[1]}"
        )
    min_similarity = check_scalar(min_similarity, "min_similarity")
    backend = _check_backend(backend)
    task_threads = _check_task_threads(n_threads)
    blocks = _blocks(A.shape[0], block_rows, client, "block_rows")
    dtype = np.result_type(A.dtype, (A if B is None else B).dtype)
    P = _similarity._prepare_similarity(A, B, backend, check_n_threads(None))
    futures = [_scatter(client, P)]
    try:
        parts = _run_blocks(
            client,
            "cosine-similarity",
            _cosine_similarity_block,
            futures,
            blocks,
            (min_similarity, task_threads),
            retries,
            progress,
        )
    finally:
        _release(client, futures)
    return _stack_csr(parts, P.n_other, dtype, P.family)


# ---- recommendation -----------------------------------------------------------------------


def _is_model(obj) -> bool:
    return callable(getattr(obj, "recommend", None)) and not isinstance(obj, (tuple, list))


def _recommend_pair_block(UI: CSR, NB: CSR, EX: CSR | None, r0, block, n, opts, out):
    result = _local_recommend(
        UI.to_scipy(),
        NB.to_scipy(),
        n,
        user_ids=block,
        exclude=None if EX is None else EX.to_scipy(),
        **opts,
    )
    return _deliver(result, block, r0, out)


def _recommend_model_block(model, r0, block, context, n, exclude_seen, out):
    extra = {} if context is None else {"context": context}
    result = model.recommend(block, n=n, exclude_seen=exclude_seen, **extra)
    return _deliver(
        TopK(*result),
        block,
        r0,
        out,
        getattr(model, "user_ids_", None),
        getattr(model, "item_ids_", None),
    )


def _check_context(context, n_users):
    """Per-user context codes as arrays (checked further by the model itself)."""
    if context is None:
        return None
    if not isinstance(context, dict):
        raise TypeError(f"context must be a dict, got {type(context).__name__}")
    out = {}
    for name, codes in context.items():
        arr = np.asarray(codes)
        if arr.ndim > 1 or (arr.ndim == 1 and len(arr) != n_users):
            raise ValueError(
                f"context[{name!r}] must be one code or one per user ({n_users}), "
                f"got shape {arr.shape}"
            )
        out[name] = arr
    return out


def _context_rows(context, r0, r1):
    if context is None:
        return None
    return {name: arr if arr.ndim == 0 else arr[r0:r1] for name, arr in context.items()}


def _deliver(result: TopK, users, r0, out, user_ids=None, item_ids=None):
    """The block's TopK, or the path of the Parquet file it was written to (original user
    and item ids when the model has id maps, else rows and columns)."""
    if out is None:
        return result
    n_rows, n = result.indices.shape
    keep = result.indices >= 0  # padding is not a recommendation
    user_col = np.repeat(users, n).reshape(n_rows, n)[keep]
    item_col = result.indices[keep]
    if user_ids is not None and item_ids is not None:
        user_col, item_col = np.asarray(user_ids)[user_col], np.asarray(item_ids)[item_col]
    frame = pd.DataFrame(
        {
            "user": user_col,
            "rank": np.broadcast_to(np.arange(1, n + 1, dtype=np.int32), (n_rows, n))[keep],
            "item": item_col,
            "score": result.scores[keep],
        }
    )
    path = f"{out.rstrip('/')}/part-{r0:012d}.parquet"
    if "://" in out:  # a remote store (fsspec URL): one put is already all or nothing
        frame.to_parquet(path, index=False)
    else:  # a shared file system: write aside, then rename, so a killed task leaves no half file
        os.makedirs(out, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return path


def recommend(
    model_or_matrices,
    user_ids=None,
    n=10,
    *,
    client=None,
    block_users=None,
    exclude_seen=True,
    exclude=None,
    backend="auto",
    n_threads=1,
    context=None,
    to_parquet=None,
    retries=2,
    progress=False,
    columns=INTERACTION_COLUMNS,
):
    """Batch top-n recommendation on a Dask cluster, identical to the local call.

    ``model_or_matrices``: a fitted model (ItemKNN, UserKNN, Hybrid, ...: anything with
    ``recommend(user_ids, n=, exclude_seen=)`` returning a TopK and ``n_users_``), scattered
    once and asked per block; or the pair ``(user_items, item_neighbours)`` for
    :func:`fastrec.recommend` (``user_items`` may be a Dask DataFrame of interactions, see
    :func:`interactions_to_csr`; ``exclude``, ``backend`` and ``n_threads`` apply to the pair
    only: a model uses its own settings). ``context`` (models only, e.g. a Hybrid fit with
    contexts): name -> one code, or one code per entry of ``user_ids`` (split with the blocks).
    ``user_ids``: user rows (default all), any order;
    split into blocks of ``block_users``. Returns the TopK of ``len(user_ids)`` rows, or, with
    ``to_parquet`` (a directory, or an fsspec URL, that every worker can write), writes one
    file per block (columns user, rank (1 = best), item, score; padding dropped; user and
    item are original ids when the model was fit on Interactions, else rows and columns) from the
    workers and returns their paths in block order: nothing is collected on the client.
    Memory per worker: the model or matrices plus a block's scores; the client holds
    O(len(user_ids) * n) unless writing Parquet.
    """
    client = _client(client)
    retries = _check_retries(retries)
    n = check_k(n, "n")
    exclude_seen = bool(exclude_seen)
    if to_parquet is not None:
        if not isinstance(to_parquet, (str, os.PathLike)):
            raise TypeError(f"to_parquet must be a path, got {type(to_parquet).__name__}")
        to_parquet = os.fspath(to_parquet)
        if "://" not in to_parquet:  # the workers may run in another directory
            to_parquet = os.path.abspath(to_parquet)
    if _is_model(model_or_matrices):
        model = model_or_matrices
        n_users = getattr(model, "n_users_", None)
        if n_users is None:
            raise ValueError(f"{type(model).__name__} is not fitted: call fit() first")
        if exclude is not None or backend != "auto":
            raise ValueError(
                "exclude= and backend= apply to a (user_items, item_neighbours) pair only: a "
                "model recommends with its own settings"
            )
        users = (
            np.arange(n_users, dtype=np.int64)
            if user_ids is None
            else check_ids(user_ids, "user_ids", n_users)
        )
        context = _check_context(context, len(users))
        blocks = [
            (r0, users[r0:r1], _context_rows(context, r0, r1))
            for r0, r1 in _blocks(len(users), block_users, client, "block_users")
        ]
        shared = [_scatter(client, model)]
        fn, extra = _recommend_model_block, (n, exclude_seen, to_parquet)
    else:
        if not (isinstance(model_or_matrices, (tuple, list)) and len(model_or_matrices) == 2):
            raise TypeError(
                "model_or_matrices must be a fitted model or a (user_items, item_neighbours) "
                f"pair, got {type(model_or_matrices).__name__}"
            )
        if context is not None:
            raise ValueError("context= applies to a model only")
        NB = check_csr(model_or_matrices[1], "item_neighbours", drop_zeros=True)
        UI = _as_csr(model_or_matrices[0], "user_items", client, columns, n_cols=NB.shape[0])
        n_users, n_items = UI.shape
        if NB.shape != (n_items, n_items):
            raise ValueError(
                f"item_neighbours must have shape ({n_items}, {n_items}) to match user_items "
                f"{UI.shape}, got {NB.shape}"
            )
        EX = None
        if exclude is not None:
            EX = check_csr(exclude, "exclude", allow_nonfinite=True)
            if EX.shape != UI.shape:
                raise ValueError(f"exclude must have shape {UI.shape}, got {EX.shape}")
        users = (
            np.arange(n_users, dtype=np.int64)
            if user_ids is None
            else check_ids(user_ids, "user_ids", n_users)
        )
        opts = dict(
            exclude_seen=exclude_seen,
            backend=_check_backend(backend),
            n_threads=_check_task_threads(n_threads),
        )
        blocks = [
            (r0, users[r0:r1]) for r0, r1 in _blocks(len(users), block_users, client, "block_users")
        ]
        shared = [
            _scatter(client, UI),
            _scatter(client, NB),
            None if EX is None else _scatter(client, EX),
        ]
        fn, extra = _recommend_pair_block, (n, opts, to_parquet)
    # Each task carries its own user ids (small); the big inputs were scattered once.
    try:
        parts = _run_blocks(client, "recommend", fn, shared, blocks, extra, retries, progress)
    finally:
        _release(client, shared)
    if to_parquet is not None:
        return parts
    if not parts:  # no users: the local call gives the right empty shapes and dtypes
        if _is_model(model_or_matrices):
            return _recommend_model_block(
                model_or_matrices, 0, users, context, n, exclude_seen, None
            )
        return _local_recommend(UI.to_scipy(), NB.to_scipy(), n, user_ids=users, **opts)
    return TopK(
        np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
    )


# ---- embedding retrieval ------------------------------------------------------------------


def _dot_topk_block(items, Q, ex_indptr, ex_indices, k, backend, n_threads):
    X, bias, cand = items
    return _embedding._dot_topk_block(
        Q, X, bias, cand, ex_indptr, ex_indices, k, backend, n_threads
    )


def dot_topk(
    queries,
    items,
    k,
    *,
    exclude=None,
    candidates=None,
    item_bias=None,
    metric="dot",
    client=None,
    block_rows=None,
    backend="auto",
    n_threads=1,
    retries=2,
    progress=False,
):
    """:func:`fastrec.dot_topk` on a Dask cluster over blocks of query rows, bit for bit.

    Inputs are validated (and normalised under cosine) once here; the items (with the bias
    and candidates) are scattered once to every worker, and each task gets its block of
    query rows and of ``exclude`` rows. Blocks are whole multiples of the compiled kernels'
    512-query tile (``block_rows`` is rounded up to one), so every query is scored in the
    same BLAS tile as in one local call: the assembled result is the local call's for any
    block size and number of workers. ``n_threads``: threads per task (default 1).
    ``retries``, ``progress``: as :func:`cosine_topk`. Memory per worker: the items plus a
    task's tiles and block; the client holds the queries and the O(n_queries * k) result.
    Other arguments, result and tie rule: as :func:`fastrec.dot_topk` (host arrays only).
    """
    client = _client(client)
    retries = _check_retries(retries)
    k = check_k(k)
    backend = _check_backend(backend)
    n_threads = _check_task_threads(n_threads)
    Q, X, bias, cand, ex_indptr, ex_indices = _embedding._prepare(
        queries, items, exclude, candidates, item_bias, metric
    )
    tile = _embedding.QUERY_TILE_ROWS
    if block_rows is not None:
        block_rows = check_scalar(block_rows, "block_rows", min_value=1, integer=True)
    else:
        threads = max(1, sum(client.nthreads().values()))
        block_rows = math.ceil(Q.shape[0] / (BLOCKS_PER_THREAD * threads))
    block_rows = tile * max(1, math.ceil(block_rows / tile))
    blocks = []
    for r0, r1 in _blocks(Q.shape[0], block_rows, client, "block_rows"):
        if ex_indptr is None:
            ex = (None, None)
        else:
            lo, hi = int(ex_indptr[r0]), int(ex_indptr[r1])
            ex = (ex_indptr[r0 : r1 + 1] - ex_indptr[r0], ex_indices[lo:hi])
        blocks.append((Q[r0:r1], *ex))
    if not blocks:  # no queries: the local kernel gives the right empty shapes and dtypes
        return _embedding._dot_topk_block(Q, X, bias, cand, None, None, k, backend, 1)
    shared = _scatter(client, (X, bias, cand))
    try:
        parts = _run_blocks(
            client,
            "dot-topk",
            _dot_topk_block,
            [shared],
            blocks,
            (k, backend, n_threads),
            retries,
            progress,
        )
    finally:
        _release(client, [shared])
    return TopK(
        np.concatenate([p.indices for p in parts]), np.concatenate([p.scores for p in parts])
    )
