"""Which backends an equivalence suite runs over: every available CPU backend but the reference.

The CUDA backend has its own suite (it runs on Numba's simulator in CI, on tiny inputs).
"""

from fastrec import available_backends


def compiled_backends(kernel: str) -> list[str]:
    return [b for b in available_backends(kernel) if b not in ("numpy", "cuda")]
