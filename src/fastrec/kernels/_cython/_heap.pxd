"""The bounded heap and pair quickselect shared by the Cython kernels (cimported by _topk.pyx,
_similarity.pyx and _embedding.pyx).

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


# ---- quickselect of (value, index) pairs (dense top-k rows, embedding top-k) ------------------

cdef inline bint _better(heap_value va, int64_t ia, heap_value vb, int64_t ib) noexcept nogil:
    """(va, ia) ranks above (vb, ib): larger score, or equal and smaller column. Branch-free."""
    return (va > vb) | ((va == vb) & (ia < ib))


cdef inline void _swap(heap_value* bv, int64_t* bi, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef heap_value v = bv[a]
    cdef int64_t i = bi[a]
    bv[a] = bv[b]
    bi[a] = bi[b]
    bv[b] = v
    bi[b] = i


cdef inline void _select_pairs(heap_value* bv, int64_t* bi, Py_ssize_t n,
                               Py_ssize_t k) noexcept nogil:
    """Reorder bv/bi[:n] (n > k) so that [:k] hold the best k, the k-th best at k-1.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (swap always,
    advance when above the pivot): expected O(n).
    """
    cdef Py_ssize_t lo = 0, hi = n - 1, mid, s, t
    cdef heap_value v, pv
    cdef int64_t i, pi
    while lo < hi:
        mid = (lo + hi) >> 1
        # Order lo, mid, hi best first, then the median (mid) becomes the pivot at hi.
        if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
            _swap(bv, bi, mid, lo)
        if _better(bv[hi], bi[hi], bv[mid], bi[mid]):
            _swap(bv, bi, mid, hi)
            if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
                _swap(bv, bi, mid, lo)
        _swap(bv, bi, mid, hi)
        pv = bv[hi]
        pi = bi[hi]
        s = lo
        for t in range(lo, hi):
            v = bv[t]
            i = bi[t]
            bv[t] = bv[s]
            bi[t] = bi[s]
            bv[s] = v
            bi[s] = i
            s += _better(v, i, pv, pi)
        bv[hi] = bv[s]
        bi[hi] = bi[s]
        bv[s] = pv
        bi[s] = pi
        if s == k - 1:
            return
        if s > k - 1:
            hi = s - 1
        else:
            lo = s + 1
