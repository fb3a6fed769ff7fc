"""Test configuration: hypothesis profiles (CI keeps runs short; `--hypothesis-profile=thorough`
for a deeper search); the CUDA backend on Numba's simulator when this machine has no GPU."""

import glob
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# CUDA backend: Numba reads NUMBA_ENABLE_CUDASIM once, when numba is first imported, so it must
# be set here (pytest loads this file before any test module imports fastrec or numba). On a
# machine without an NVIDIA device the CUDA kernels then run on the simulator in the normal
# test run (tests/test_cuda_equivalence.py); with a GPU they run on it. An explicit setting of
# the variable wins. The simulator only replaces numba.cuda: Numba's CPU kernels are unaffected.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not glob.glob("/dev/nvidia[0-9]*"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
if os.environ["NUMBA_ENABLE_CUDASIM"].strip() not in ("", "0"):
    # The simulator's block manager polls its threads in a loop that holds the GIL until the
    # interpreter switches; the threads of a block meet at barriers (syncthreads, each warp
    # shuffle), so every CUDA test runs several times faster when Python switches every
    # 0.5 ms instead of 5 ms. Any test may launch a kernel, so this holds for the whole run.
    sys.setswitchinterval(5e-4)

# Small calls run on fewer threads (fastrec._validation.threads_for); the tests' inputs are
# small, so that the multi-threaded kernels still run here (and in the processes the tests
# start, which inherit the variable), every call gets the threads it asks for.
os.environ.setdefault("FASTREC_WORK_PER_THREAD", "1")

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile("default")


# ---- Numba's kernels compiled beside the run (tests/_numba_warm.py) ---------------------------
# A whole run on a fresh machine spends ~40 % of its time compiling the Numba backend's kernels,
# one at a time, on one core; a second process compiles them into Numba's cache meanwhile.
# Started for long runs only (a single test file does not want a process compiling for minutes);
# FASTREC_TEST_WARM_NUMBA=0 turns it off, =1 forces it.
_WARM_MIN_TESTS = 400
_warm_process = None


def pytest_collection_finish(session):
    global _warm_process
    wanted = os.environ.get("FASTREC_TEST_WARM_NUMBA", "")
    if wanted == "0" or (wanted != "1" and len(session.items) < _WARM_MIN_TESTS):
        return
    spec = importlib.util.find_spec("fastrec")  # the fastrec under test, without importing it
    if spec is None or spec.origin is None:
        return
    env = dict(os.environ)
    root = str(Path(spec.origin).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    _warm_process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_numba_warm.py"))],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pytest_sessionfinish(session, exitstatus):
    if _warm_process is not None and _warm_process.poll() is None:
        _warm_process.kill()
        _warm_process.wait(timeout=60)
