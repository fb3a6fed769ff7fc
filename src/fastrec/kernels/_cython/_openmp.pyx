"""What the compiled build supports: whether OpenMP was linked, and its default team size."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTREC_HAVE_OPENMP 1
    static int fastrec_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTREC_HAVE_OPENMP 0
    static int fastrec_max_threads(void) { return 1; }
    #endif
    """
    int FASTREC_HAVE_OPENMP
    int fastrec_max_threads()


def openmp_enabled():
    """True when the Cython kernels were compiled with OpenMP."""
    return bool(FASTREC_HAVE_OPENMP)


def openmp_max_threads():
    """OpenMP's default team size (1 when built without OpenMP)."""
    return fastrec_max_threads()
