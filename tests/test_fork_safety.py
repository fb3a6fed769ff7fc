"""Fork safety: every public kernel keeps working, with the same bits, in forked children.

Each scenario runs in a fresh interpreter with a wall-clock bound, and every forked child in it
carries an alarm, so a regression (GNU OpenMP's pool does not survive fork) fails the test
instead of hanging CI.
"""

import os
import subprocess
import sys
from pathlib import Path

import fastrec
from fastrec._config import config
from fastrec._dispatch import available_backends

SCRIPT = Path(__file__).with_name("_fork_scenarios.py")
# The children import the fastrec under test (installed, or the source tree with its build).
FASTREC_ROOT = str(Path(fastrec.__file__).resolve().parents[1])
CPU_BACKENDS = [b for b in ("numpy", "cython", "numba") if b in available_backends()]


def _run(*args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([FASTREC_ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_os_fork_after_every_backend_was_used():
    # One interpreter for all backends keeps the test to a few seconds.
    _run("os.fork", *CPU_BACKENDS)


def test_multiprocessing_pool_every_start_method():
    _run("mp", "fork", "forkserver", "spawn")


def test_info_says_what_happens_after_fork():
    assert "forked children" in config()["after fork"]
