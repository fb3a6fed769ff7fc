"""Every public entry point refuses malformed sparse structure (decreasing or short indptr,
indices out of range or negative, shape smaller than the indices) with a ValueError/TypeError
before any kernel runs. Cases run in a subprocess, so a crash fails the test, not the run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import fastrec

HERE = Path(__file__).parent
FASTREC_ROOT = str(Path(fastrec.__file__).resolve().parents[1])
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        # the fastrec under test (installed, or the source tree with its build)
        [
            str(Path(fastrec.__file__).resolve().parents[1]),
            str(HERE),
            os.environ.get("PYTHONPATH", ""),
        ]
    ),
}


def test_every_entry_point_refuses_malformed_structure_crash_isolated():
    proc = subprocess.run(
        [sys.executable, str(HERE / "_sparse_fuzz.py"), "7", "16"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    last = proc.stdout.strip().splitlines()[-2:]
    assert proc.returncode == 0, f"status {proc.returncode} after {last}\n{proc.stderr[-2000:]}"


def test_out_of_range_index_named_in_the_message():
    X = sp.csr_matrix(np.eye(3))
    X.indices[1] = 10**6
    with pytest.raises(ValueError, match="column index 1000000, outside"):
        fastrec.topk(np.ones((3, 3)), 2, exclude=X)


def test_edited_indices_are_resorted_not_trusted():
    # scipy caches "canonical"; an in-place edit afterwards must not reach the kernels unsorted.
    UI = sp.csr_matrix(np.array([[1.0, 0.0, 1.0, 0.0]]))
    assert UI.has_canonical_format
    UI.indices[:] = [2, 0]  # still items 0 and 2, now out of order
    NB = sp.csr_matrix(np.ones((4, 4)) - np.eye(4))
    for backend in fastrec.available_backends("recommend"):
        res = fastrec.recommend(UI, NB, 4, backend=backend)
        np.testing.assert_array_equal(res.indices[0], [1, 3, -1, -1])
