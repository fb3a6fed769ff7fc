"""Progress bars for long fits and batch recommends (tqdm, on stderr, only past a delay).

Work that may take long is split into row blocks whose results do not depend on the split
(each row is computed alone), so a bar costs one kernel call per block and changes no bit.
A bar appears only when the work is still running after ``DELAY_S`` seconds: short calls
print nothing. ``verbose=False`` on a model (``--quiet`` on the command line) silences it.
"""
from __future__ import annotations

import numpy as np

DELAY_S = 2.0
# Below this many rows a call is split no further: fast enough that a bar is never due.
MIN_ROWS = 20_000
N_BLOCKS = 40


def row_blocks(n_rows: int, verbose: bool) -> list[np.ndarray] | None:
    """Row-id blocks for a bar, or None when the work should run as one call."""
    if not verbose or n_rows < MIN_ROWS:
        return None
    size = max(-(-n_rows // N_BLOCKS), MIN_ROWS // N_BLOCKS)
    return [np.arange(s, min(s + size, n_rows), dtype=np.int64) for s in range(0, n_rows, size)]


def bar(items, desc: str, total: int, unit: str = "rows"):
    """Iterate ``items`` behind a tqdm bar shown after DELAY_S seconds (updated by row count).

    ``items``: blocks (arrays); the bar advances by each block's length.
    """
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, delay=DELAY_S, leave=False,
              dynamic_ncols=True) as progress:
        for block in items:
            yield block
            progress.update(len(block))
