"""What this installation can do: versions, available backends, threads (``fastrec info``)."""

from __future__ import annotations

import os
import platform
import sys

from ._dispatch import AUTO_ORDER, BACKENDS, _load, auto_pass, backend_status
from ._fork import describe as describe_fork
from ._fork import fork_safe
from ._validation import usable_cpu_count
from ._version import __version__


def _numba_threading_layer() -> str:
    """The layer Numba's parallel kernels run on (needs one tiny parallel function compiled)."""
    import numba

    @numba.njit(parallel=True, cache=False)
    def _touch(n):
        acc = 0
        for i in numba.prange(n):
            acc += i
        return acc

    fork_safe(_touch, "numba")(4)  # a forked child's first parallel region needs the guard
    return numba.threading_layer()


def _topk_form(backend: str) -> str:
    from .kernels.form_choice import apply_topk_form, chosen

    apply_topk_form(backend)
    form, why = chosen()[f"topk_float32_{backend}"]
    return f", float32 topk (k >= 32): {form} [{why}]"


def _csr_dot_form() -> str:
    from .kernels.form_choice import chosen, csr_dot_form

    csr_dot_form()
    form, why = chosen()["csr_dot"]
    return f", CSR dot product: {form} [{why}]"


def _csr_dot_form_cython() -> str:
    from .kernels.form_choice import apply_csr_dot_form_cython, chosen

    apply_csr_dot_form_cython()
    form, why = chosen()["csr_dot_cython"]
    return f", CSR dot product: {form} [{why}]"


def auto_choices() -> dict:
    """kernel -> (backend "auto" runs here, why): the first of the kernel's preference order
    (``AUTO_ORDER``, fastest first as measured in benchmarks/README.md) that is available and
    implements it; the reason names the order and any backend passed over."""
    out = {}
    for kernel, order in AUTO_ORDER.items():
        skipped, pick = [], None
        for name in order:
            ok, _ = backend_status(name)
            has = ok and hasattr(_load(name), kernel)
            passed = auto_pass(name, kernel) if has else ""
            if has and not passed:
                pick = name
                break
            skipped.append(
                f"{name} passed over: {passed}"
                if passed
                else f"{name} {'lacks it' if ok else 'unavailable'}"
            )
        why = "order " + " > ".join(order) + (f"; {', '.join(skipped)}" if skipped else "")
        out[kernel] = (pick or "none", why)
    return out


def config() -> dict:
    """The facts :func:`show_config` prints, as a dict."""
    import numpy
    import scipy

    from .kernels.form_choice import cpu_description

    info = {
        "fastrec": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "cpu": cpu_description(),
        "default n_threads": usable_cpu_count(),
        "backends": {},
    }
    for name in BACKENDS:
        ok, reason = backend_status(name)
        detail = "available" if ok else f"unavailable: {reason}"
        if ok and name == "cython":
            from .kernels._cython._openmp import openmp_enabled, openmp_max_threads

            detail += (
                f", OpenMP {'on' if openmp_enabled() else 'OFF (one thread)'}"
                f", {openmp_max_threads()} OpenMP threads"
            )
            detail += _topk_form("cython") + _csr_dot_form_cython()
        if ok and name == "numba":
            import numba

            detail += f", numba {numba.__version__}, threading layer {_numba_threading_layer()}"
            detail += _topk_form("numba") + _csr_dot_form()
        if ok and name == "cuda":
            from .kernels.numba_cuda import device_description

            detail += f", {device_description()}"
        info["backends"][name] = detail
    info["auto"] = auto_choices()
    info["after fork"] = describe_fork()
    return info


def show_config(file=None) -> None:
    """Print fastrec's version, its backends and the default thread count."""
    file = file or sys.stdout
    info = config()
    for key, value in info.items():
        if key == "backends":
            print("backends:", file=file)
            for name, detail in value.items():
                print(f"  {name:7s} {detail}", file=file)
        elif key == "auto":
            print(
                'backend="auto" runs (CPU; "cuda" only for device arrays or when named):', file=file
            )
            for kernel, (pick, why) in value.items():
                print(f"  {kernel:26s} {pick:7s} ({why})", file=file)
        else:
            print(f"{key}: {value}", file=file)
    from .kernels.form_choice import cache_path

    print(
        f"code paths: chosen per CPU on first use, cached in {cache_path()} "
        "(FASTREC_FORMS overrides; delete the file to measure again)",
        file=file,
    )
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("note: NUMBA_ENABLE_CUDASIM=1, CUDA kernels run on Numba's simulator", file=file)
