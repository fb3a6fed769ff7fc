"""Backend selection: map ``backend=`` to a kernel function, or say why it is not available.

Each backend is a module under ``fastrec.kernels`` exposing the kernels by the same names and
signatures (see ``kernels/reference.py``). ``"auto"`` walks a per-kernel preference list,
ordered by what ``benchmarks/`` measured, and takes the first backend that is available and
implements the kernel. An explicit backend that is unavailable raises
:class:`BackendUnavailableError`; there is no silent fallback.
"""

from __future__ import annotations

import importlib
from functools import cache

from ._fork import fork_safe

BACKENDS = ("numpy", "cython", "numba", "cuda")

_MODULES = {
    "numpy": "fastrec.kernels.reference",
    "cython": "fastrec.kernels.cython",
    "numba": "fastrec.kernels.numba_cpu",
    "cuda": "fastrec.kernels.numba_cuda",
}

_HOW_TO_GET = {
    "numpy": "it is part of fastrec; a failure here is a bug",
    "cython": "reinstall fastrec from source with a C compiler (pip install --force-reinstall "
    "--no-binary fastrec fastrec) or use a wheel built for this platform",
    "numba": "pip install numba",
    "cuda": "pip install 'fastrec[cuda]' on a machine with an NVIDIA GPU and driver, or set "
    "NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels on Numba's simulator",
}

# Preference of "auto" per kernel, fastest first (CPU backends only: "auto" picks "cuda" only
# when the inputs are device arrays, a choice made in _validation.check_placement).
# Update from benchmarks/README.md when a compiled kernel lands.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cosine_topk": ("cython", "numba", "numpy"),
    "cosine_similarity": ("cython", "numba", "numpy"),
    "topk": ("cython", "numba", "numpy"),
    "recommend": ("cython", "numba", "numpy"),
    "dot_topk": ("cython", "numba", "numpy"),
    "als_cg_update": ("numba", "cython", "numpy"),
    # ALS (benchmarks/bench_als_solve.py: 20k x 5k, 1%, 64 factors, 3 CG steps, 2 threads, Zen 4,
    # loaded): numba 1.3x the Cython AVX-512 build, 2.2x its base build. On the mid set's fit
    # the AVX-512 build was 1.07x numba (within the noise): numba stays first.
    # Scoring: benchmarks/README.md, "Scoring". Dense: Cython's AVX2 rows compute a 2M x 64
    # float32 row in ~9 ns against Numba's ~12 (rows in L3, Zen 4); where the CPU lacks AVX2
    # with FMA, "auto" passes over Cython (``auto_pass``) to Numba.
    "sigmoid_dense": ("cython", "numba", "numpy"),
    # CSR: Cython's AVX-512 gathers 1.13-1.15x SciPy at 1 thread and 2.14-2.18x at 2 against
    # Numba's 1.07-1.09x and 2.07-2.10x (Zen 4, 2M x 2^20, one run; bench_csr_sigmoid.py).
    "sigmoid_csr": ("cython", "numba", "numpy"),
    "logistic_loss_grad_dense": ("numba", "cython", "numpy"),
    "logistic_loss_grad_csr": ("cython", "numba", "numpy"),
    # Hessian-vector products: benchmarks/README.md, "Fit" (hashed CSR: cython ahead; dense:
    # numba ahead at 2 threads).
    "logistic_hessp_dense": ("numba", "cython", "numpy"),
    "logistic_hessp_csr": ("cython", "numba", "numpy"),
}


class BackendUnavailableError(ImportError):
    """The requested backend cannot run here; the message says how to get it."""


@cache
def _load(backend: str):
    """The backend module, or the exception that importing it raised."""
    try:
        return importlib.import_module(_MODULES[backend])
    except Exception as exc:  # any import failure means "unavailable", with its reason kept
        return exc


def backend_status(backend: str) -> tuple[bool, str]:
    """(available, reason) for one backend name."""
    mod = _load(backend)
    if isinstance(mod, Exception):
        return False, f"{type(mod).__name__}: {mod}"
    check = getattr(mod, "is_available", None)
    if check is not None:
        ok, reason = check()
        if not ok:
            return False, reason
    return True, ""


def auto_pass(backend: str, kernel: str) -> str:
    """Why "auto" passes over an available ``backend`` for ``kernel`` on this CPU ("" if it
    does not): a backend whose fast form of a kernel needs CPU features that this machine lacks
    says so through its optional ``auto_pass(kernel)``."""
    check = getattr(_load(backend), "auto_pass", None)
    return check(kernel) if check is not None else ""


def get_kernel(kernel: str, backend: str = "auto"):
    """The function implementing ``kernel`` for ``backend`` ("auto" resolves by AUTO_ORDER)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        for name in AUTO_ORDER[kernel]:
            ok, _ = backend_status(name)
            fn = getattr(_load(name), kernel, None) if ok else None
            if fn is not None and not auto_pass(name, kernel):
                return _fork_safe_kernel(kernel, name)
        raise BackendUnavailableError(f"no backend available for {kernel}")  # pragma: no cover
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    ok, reason = backend_status(backend)
    if not ok:
        raise BackendUnavailableError(
            f"backend {backend!r} is not available ({reason}); to get it: {_HOW_TO_GET[backend]}"
        )
    fn = getattr(_load(backend), kernel, None)
    if fn is None:
        raise BackendUnavailableError(
            f"backend {backend!r} does not implement {kernel} in this version of fastrec; "
            f"use backend='auto' or one of {available_backends(kernel)}"
        )
    return _fork_safe_kernel(kernel, backend)


@cache
def _fork_safe_kernel(kernel: str, backend: str):
    """The kernel, wrapped (once) to stay usable in forked children (see ``_fork``)."""
    return fork_safe(getattr(_load(backend), kernel), backend)


def backend_module(backend: str):
    """The module of an explicitly named backend, or :class:`BackendUnavailableError` saying how
    to get it (the device-array helpers of "cuda" are reached this way)."""
    ok, reason = backend_status(backend)
    if not ok:
        raise BackendUnavailableError(
            f"backend {backend!r} is not available ({reason}); to get it: {_HOW_TO_GET[backend]}"
        )
    return _load(backend)


def available_backends(kernel: str | None = None) -> list[str]:
    """Backends that can run here (and implement ``kernel``, when given)."""
    out = []
    for name in BACKENDS:
        if backend_status(name)[0] and (kernel is None or hasattr(_load(name), kernel)):
            out.append(name)
    return out
