"""The bounded heap shared by the Cython kernels (cimported by _topk.pyx and _similarity.pyx).

It keeps the k best (value, index) pairs; the root is the worst kept entry (smaller value, or
equal value and larger index), so ties are broken by the smaller index.
"""
from libc.stdint cimport int64_t

ctypedef fused heap_value:
    float
    double


cdef inline bint _worse(heap_value va, int64_t ia, heap_value vb, int64_t ib) noexcept nogil:
    """(va, ia) ranks below (vb, ib): smaller score, or equal score and larger index."""
    return va < vb or (va == vb and ia > ib)


cdef inline void _sift_down(
    heap_value* hv, int64_t* hi, Py_ssize_t size, Py_ssize_t pos
) noexcept nogil:
    cdef heap_value v = hv[pos]
    cdef int64_t i = hi[pos]
    cdef Py_ssize_t child
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _worse(hv[child + 1], hi[child + 1], hv[child], hi[child]):
            child += 1
        if not _worse(hv[child], hi[child], v, i):
            break
        hv[pos] = hv[child]
        hi[pos] = hi[child]
        pos = child
    hv[pos] = v
    hi[pos] = i


cdef inline Py_ssize_t _heap_offer(
    heap_value* hv, int64_t* hi, Py_ssize_t size, Py_ssize_t k, heap_value v, int64_t i
) noexcept nogil:
    """Offer candidate (v, i) to a heap of ``size`` <= k entries; returns the new size.

    O(log k). The caller filters non-candidates (NaN, -inf) before offering.
    """
    cdef Py_ssize_t pos, parent
    if size < k:
        pos = size
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _worse(v, i, hv[parent], hi[parent]):
                break
            hv[pos] = hv[parent]
            hi[pos] = hi[parent]
            pos = parent
        hv[pos] = v
        hi[pos] = i
        return size + 1
    if _worse(hv[0], hi[0], v, i):
        hv[0] = v
        hi[0] = i
        _sift_down(hv, hi, size, 0)
    return size


cdef inline void _heap_sort(heap_value* hv, int64_t* hi, Py_ssize_t size) noexcept nogil:
    """In place: heap -> best first (score descending, ties by smaller index)."""
    cdef Py_ssize_t end
    cdef heap_value v
    cdef int64_t i
    for end in range(size - 1, 0, -1):
        v = hv[0]
        i = hi[0]
        hv[0] = hv[end]
        hi[0] = hi[end]
        hv[end] = v
        hi[end] = i
        _sift_down(hv, hi, end, 0)


# ---- dense top-k -----------------------------------------------------------------------------
