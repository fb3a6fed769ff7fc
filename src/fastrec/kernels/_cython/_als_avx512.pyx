"""The ALS CG kernel of ``_als.pxi`` for x86-64 CPUs with AVX-512 (F, DQ, VL, BW) and FMA.

Imported by ``fastrec.kernels.cython`` only when ``_als.cpu_isa()`` says the CPU has them: gcc
compiles every function of this module for that target (elsewhere, e.g. on aarch64, it is
the base build again). Fused multiply-adds change the last bits against the base build, never
across thread counts.
"""

cdef extern from *:
    """
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    #pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,prefer-vector-width=512")
    #endif
    """

include "_als.pxi"
