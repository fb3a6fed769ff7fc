"""The ALS CG kernel of ``_als.pxi`` for x86-64 CPUs with AVX2 and FMA.

Imported by ``fastrec.kernels.cython`` only when ``_als.cpu_isa()`` says the CPU has them: gcc
compiles every function of this module for that target (elsewhere, e.g. on aarch64, it is
the base build again). Fused multiply-adds change the last bits against the base build, never
across thread counts.
"""

cdef extern from *:
    """
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    #pragma GCC target("avx2,fma")
    #endif
    """

include "_als.pxi"
