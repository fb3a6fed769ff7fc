"""Progress bars for long fits and batch recommends (tqdm, on stderr, only past a delay).

Work that may take long is split into row blocks whose results do not depend on the split
(each row is computed alone), so a bar changes no bit. The first block (1/64 of the rows) is
timed: when the rest would finish within ``DELAY_S`` it runs as one call and no bar shows;
otherwise the rest runs in blocks of about ``TARGET_BLOCK_S`` each, so that the fixed cost of
a call (input checks over the whole matrix, thread start) stays a few per cent of the work.
``verbose=False`` on a model (``--quiet`` on the command line) runs everything as one call.
"""

from __future__ import annotations

import time

import numpy as np

DELAY_S = 2.0
TARGET_BLOCK_S = 1.0
# Below this many rows a call is never split: fast enough that a bar is never due.
MIN_ROWS = 20_000
FIRST_BLOCK_FRACTION = 1 / 64


def blockwise(run, n_rows: int, verbose: bool, desc: str, unit: str = "rows") -> list:
    """``[run(rows) for rows in blocks]`` over consecutive row blocks covering 0..n_rows-1.

    One block (one call) when not ``verbose`` or for few rows; otherwise timed blocks as the
    module docstring says, behind a tqdm bar that appears once DELAY_S seconds have passed.
    """
    if not verbose or n_rows < MIN_ROWS:
        return [run(np.arange(n_rows, dtype=np.int64))]
    first = max(int(n_rows * FIRST_BLOCK_FRACTION), 1)
    start = time.perf_counter()
    parts = [run(np.arange(first, dtype=np.int64))]
    elapsed = time.perf_counter() - start
    per_row = elapsed / first
    if per_row * (n_rows - first) < DELAY_S - elapsed:
        return parts + [run(np.arange(first, n_rows, dtype=np.int64))]
    size = max(int(TARGET_BLOCK_S / max(per_row, 1e-12)), first)
    from tqdm.auto import tqdm

    with tqdm(
        total=n_rows,
        initial=first,
        desc=desc,
        unit=unit,
        leave=False,
        delay=max(DELAY_S - elapsed, 0.0),
        dynamic_ncols=True,
    ) as bar:
        for s in range(first, n_rows, size):
            rows = np.arange(s, min(s + size, n_rows), dtype=np.int64)
            parts.append(run(rows))
            bar.update(len(rows))
    return parts
