"""Which form the float32 top-k row takes in the compiled CPU backends, and a switch for tests
and benchmarks.

Both backends have two exact forms of the float32 row: the vector-compress ("stream") form
and the bit-mask walk. For k >= 32 the one that runs is measured on this CPU on first use
(kernels.form_choice; Cython's compress form needs AVX-512); below, the walk. See README
("Ranking") and benchmarks/README.md for what each costs.
"""

from __future__ import annotations

import contextlib
import importlib

BACKENDS = ("cython", "numba")


def _check(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def compress_available(backend: str) -> bool:
    """Whether ``backend`` can run its compress form here (Numba's runs on any CPU, LLVM
    expanding the compress to scalar code; Cython's needs AVX-512)."""
    _check(backend)
    if backend == "numba":
        return True
    from ._cython import _topk

    return bool(_topk._compress_available())


def compress_enabled(backend: str) -> bool:
    """Whether ``backend`` takes the compress form now (for k >= 32)."""
    _check(backend)
    if backend == "numba":
        numba_topk = importlib.import_module(".numba_cpu.topk", __package__)

        return bool(numba_topk._COMPRESS)
    from ._cython import _topk

    return bool(_topk._compress_enabled())


@contextlib.contextmanager
def float32_form(backend: str, compress: bool):
    """Within the block, ``backend`` takes the compress form for every k (True) or the walk
    (False). Raises ValueError if the compress form is asked for where it cannot run. Not
    thread-safe: it switches a module-wide setting."""
    _check(backend)
    if compress and not compress_available(backend):
        raise ValueError(f"{backend}'s compress form needs a CPU with AVX-512")
    from .form_choice import apply_topk_form

    apply_topk_form(backend)  # the machine's choice is made first, so the block's switch holds
    if backend == "numba":
        numba_topk = importlib.import_module(".numba_cpu.topk", __package__)

        saved = numba_topk._COMPRESS, numba_topk._COMPRESS_MIN_K
        numba_topk._COMPRESS, numba_topk._COMPRESS_MIN_K = bool(compress), 1
        try:
            yield
        finally:
            numba_topk._COMPRESS, numba_topk._COMPRESS_MIN_K = saved
    else:
        from ._cython import _topk

        saved = _topk._set_compress(bool(compress), 1)
        try:
            yield
        finally:
            _topk._set_compress(*saved)
