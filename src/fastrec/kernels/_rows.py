"""Row subsets for the compiled cosine_topk kernels (``rows=``): which rows to compute, in what
order, and how to pick them out of the padded per-row results. Shared by every backend."""

from __future__ import annotations

import numpy as np


def schedule(work: np.ndarray, rows) -> np.ndarray:
    """Rows to compute, heaviest first (ties by row id): all rows, or each row of ``rows`` once.

    A row's result never depends on which other rows are computed, so a subset is bit for bit
    the same rows of the all-rows result.
    """
    todo = np.arange(work.shape[0]) if rows is None else np.unique(rows)
    return todo[np.argsort(-work[todo], kind="stable")]


def take_rows(indptr, indices, values, rows):
    """The CSR rows ``rows`` (any order, repeats allowed) of (indptr, indices, values)."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    out_indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_indptr[1:])
    src = np.repeat(indptr[rows] - out_indptr[:-1], lengths) + np.arange(out_indptr[-1])
    return out_indptr, indices[src], values[src]


def plan(work: np.ndarray, rows):
    """(order, slots) for a kernel that writes each computed row into its own output slot.

    ``order``: the rows to compute, each once, heaviest first (ties by row id); row order[s]
    owns slot s. ``slots``: for each output row (every row, or each entry of ``rows``: any
    order, repeats allowed), the slot holding its result. So a block of rows needs
    O(len(rows)) slots, not one per row of X.
    """
    if rows is None:
        order = np.argsort(-work, kind="stable")
        slots = np.empty_like(order)
        slots[order] = np.arange(order.shape[0])
        return order, slots
    todo, where = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    rank = np.argsort(-work[todo], kind="stable")
    slot_of_todo = np.empty_like(rank)
    slot_of_todo[rank] = np.arange(rank.shape[0])
    return todo[rank], slot_of_todo[where.reshape(-1)]
