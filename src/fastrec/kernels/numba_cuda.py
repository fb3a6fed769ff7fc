"""The CUDA backend (numba-cuda): GPU kernels with the reference's names and signatures.

Runs on an NVIDIA GPU, or on Numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1 (how CI tests
it). Host arrays are copied in and results copied out.
"""
from __future__ import annotations

import os


def is_available():
    try:
        from numba import cuda
    except Exception as exc:  # numba-cuda missing or broken
        return False, f"numba.cuda cannot be imported ({type(exc).__name__}: {exc})"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, ""
    if not cuda.is_available():
        return False, "no CUDA GPU or driver found"
    return True, ""


def device_description() -> str:
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "Numba CUDA simulator"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    return f"GPU {name} (compute capability {dev.compute_capability})"
