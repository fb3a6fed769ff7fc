"""Cython (OpenMP) conjugate-gradient solves of implicit-feedback ALS.

The contract of ``reference.als_cg_update``; the operation order of the Numba kernel
(``numba_cpu/als.py``): rows are independent, each solved by one thread into its own output
row, so the result is bit-identical for any thread count. Per-row arithmetic in float64 (X and
Y read in their dtype, the new row rounded once to X's dtype). Every loop is a plain loop over
the factors that gcc vectorises at -O3 without fast-math: elementwise updates directly, dot
products (the Gram product G v too: one per row of G) with sixteen interleaved partial sums
combined in a fixed tree; the rows of Y four at a time (see ``_add_weighted_rows``), the
next four prefetched meanwhile (on the mid set, whose factors outgrow L2, a 1.2-1.4x faster
half-step). Inputs are trusted.

The source is ``_als.pxi``; this module is its build for the base instruction set (SSE2 on
x86-64) and says which builds for newer x86-64 CPUs this CPU can run (``cpu_isa``): on the
2-core Zen 4 of benchmarks/, the AVX2 build ran 1.6x and the AVX-512 build 1.7x as fast as
this one (loaded machine, medians of 7).
"""

include "_als.pxi"

cdef extern from *:
    """
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static int fastrec_als_isa(void) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("fma"))
            return 512;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            return 256;
        return 0;
    }
    #else
    static int fastrec_als_isa(void) { return 0; }
    #endif
    """
    int fastrec_als_isa() nogil


def cpu_isa():
    """The widest build of this kernel the CPU runs: "avx512", "avx2" or "base"."""
    cdef int isa = fastrec_als_isa()
    return "avx512" if isa == 512 else ("avx2" if isa == 256 else "base")
