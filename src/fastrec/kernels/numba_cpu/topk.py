"""Numba CPU ranking kernels: topk (dense rows) and recommend (rows of a sparse product)."""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .. import _host
from .._numba_simd import (
    above_mask64,
    append_columns16,
    compress8,
    count_above8,
    max64,
    target_has_compress,
)
from ._common import heap_offer, heap_sort, is_float32, sift_down, threads

_BLOCK = 64


@numba.njit(inline="always")
def _block_hits(block, thr):
    """Bit t set when block[t] > thr (NaN never is), len(block) <= 64.

    A full block is first tested with one fixed-length loop OR-ing integers, the form LLVM
    vectorises best, so that the common case (nothing above) costs a few instructions.
    """
    n = block.shape[0]
    if n == _BLOCK:
        hit = np.uint32(0)
        for t in range(_BLOCK):
            hit |= np.uint32(block[t] > thr)
        if hit == 0:
            return np.uint64(0)
    m = np.uint64(0)
    for t in range(n):
        m |= np.uint64(block[t] > thr) << np.uint64(t)
    return m


@numba.njit(inline="always")
def _not_excluded(ex, p, j):
    """Advance the sorted exclusion cursor p to column j; returns (p, whether j is allowed)."""
    n_ex = ex.shape[0]
    while p < n_ex and ex[p] < j:
        p += 1
    return p, not (p < n_ex and ex[p] == j)


# The threshold scan both topk rows share: entries strictly above ``thr`` (the k-th best so
# far; at the start -inf or just below the row's bound, below: NaN and -inf never pass) are
# appended to a buffer of 2k candidates; a full buffer is cut back to its best k by a
# quickselect, whose k-th entry becomes the threshold. Columns are scanned in increasing order,
# so an entry equal to the threshold never beats it (the kept one has the smaller column).
# 64-wide blocks with nothing above ``thr`` are skipped after one branch-free comparison; in
# the others only the set bits of the hit mask are visited, and the row's sorted excluded
# columns are merged in then. Each candidate costs O(1) (a heap's O(log k) chain of dependent,
# unpredictable branches measured 3.5x more work per row at k=100, n=1e5).
#
# A row of at least 2k full 64-column blocks (k >= _BOUND_MIN_K) starts from an exact bound
# rather than from -inf (whose first few thousand columns are nearly all candidates, a burst
# of cuts the row's loads cannot hide): the k-th largest of its blocks' maxima, excluded
# columns and NaN left out, then a scan of only those k blocks (float64: every block at the
# bound, _bound). The same rule, the same blocks and the same reasoning as the Cython backend
# (_topk.pyx, "The start").
_BOUND_MIN_K = 16
_bounding = True


def _set_bound(flag):
    """Start long rows from their block-maxima bound (True) or from -inf; returns the previous
    setting. For A/B runs and for tests (the results are the same)."""
    global _bounding
    previous, _bounding = _bounding, bool(flag)
    return previous


def _bound_blocks(n_cols, k, bounding):
    """How many blocks a row's bound ranks (0: the rows start from -inf)."""
    n_blocks = n_cols // _BLOCK
    return n_blocks if bounding and k >= _BOUND_MIN_K and n_blocks >= 2 * k else 0


@numba.njit
def _excluded_max(row, j0, ex, p):
    """The largest of row[j0:j0 + 64] neither NaN nor in ex[p:] (sorted), -inf when none."""
    m = row.dtype.type(-np.inf)
    for j in range(j0, j0 + _BLOCK):
        v = row[j]
        if v > m:
            p, ok = _not_excluded(ex, p, j)
            if ok:
                m = v
    return m


@numba.njit
def _bound(row, k, ex, keys, s, listed):
    """The row's bound and its blocks in ``listed`` (bits; see above); keys: one per block,
    s: a scratch of as many + 16 for the stream form's cut, else empty. The blocks are
    ranked by keys of their maxima, which float64 maxima enter rounded down to float32: the
    bound is then a float32 at most the k-th best, and a block is listed when its rounded
    maximum is at least the bound (not only the k ranked first, whose rounded maxima may tie
    with others' of larger true maxima)."""
    n_blocks = row.shape[0] // _BLOCK
    n_ex = ex.shape[0]
    p = 0
    # Written out here, not in an inlined helper taking the arrays: that form reference-
    # counted them at every block (4x slower).
    for b in range(n_blocks):
        j0 = b * _BLOCK
        while p < n_ex and ex[p] < j0:
            p += 1
        if p < n_ex and ex[p] < j0 + _BLOCK:
            m = _excluded_max(row, j0, ex, p)
        else:
            m = max64(row, j0)  # NaN left out, -inf when none
        keys[b] = _f32_key(m, b) if is_float32(row) else _f64_floor_key(m, b)
    if s.shape[0]:
        least = _cut_keys(keys, n_blocks, k, s)
    else:
        _select_keys(keys, n_blocks, k)
        least = keys[k - 1]
    listed[:] = 0
    if is_float32(row):
        for t in range(k):
            _list_block(listed, _key_column(keys[t]))
    else:
        for t in range(n_blocks):
            if keys[t] >> np.uint64(32) >= least >> np.uint64(32):
                _list_block(listed, _key_column(keys[t]))
    return _key_f32(least)


@numba.njit(inline="always")
def _list_block(listed, b):
    listed[b >> 6] |= np.uint64(1) << np.uint64(b & 63)


@numba.njit(inline="always")
def _start(row, k, ex, keys, s, listed):
    """The scan's first threshold: just below the row's bound (the scan passes entries above
    it: those at least the bound) when ``listed`` has room, else -inf."""
    if listed.shape[0] == 0:
        return row.dtype.type(-np.inf)
    bound = row.dtype.type(_bound(row, k, ex, keys, s, listed))
    return np.nextafter(bound, row.dtype.type(-np.inf))


@numba.njit(inline="always")
def _better(va, ia, vb, ib):
    """(va, ia) ranks above (vb, ib): larger score, or equal and smaller column. Branch-free."""
    return (va > vb) | ((va == vb) & (ia < ib))


@numba.njit(inline="always")
def _select_pairs(bv, bi, n, k):
    """Reorder bv/bi[:n] (n > k) so that [:k] hold the best k, the k-th best at k-1.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (swap always,
    advance when above the pivot): expected O(n).
    """
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        # Order lo, mid, hi best first, then the median (mid) becomes the pivot at hi.
        if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
            bv[mid], bv[lo] = bv[lo], bv[mid]
            bi[mid], bi[lo] = bi[lo], bi[mid]
        if _better(bv[hi], bi[hi], bv[mid], bi[mid]):
            bv[mid], bv[hi] = bv[hi], bv[mid]
            bi[mid], bi[hi] = bi[hi], bi[mid]
            if _better(bv[mid], bi[mid], bv[lo], bi[lo]):
                bv[mid], bv[lo] = bv[lo], bv[mid]
                bi[mid], bi[lo] = bi[lo], bi[mid]
        bv[mid], bv[hi] = bv[hi], bv[mid]
        bi[mid], bi[hi] = bi[hi], bi[mid]
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
            s += np.int64(_better(v, i, pv, pi))
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


@numba.njit(inline="always")
def _pairs_block(row, j0, k, ex, bv, bi, thr, cnt, p):
    """One block of _scan_pairs; returns its state (cnt, p, thr)."""
    m = _block_hits(row[j0 : j0 + _BLOCK], thr)
    while m:
        j = j0 + trailing_zeros(m)
        m &= m - np.uint64(1)
        v = row[j]
        if v > thr:  # thr may have risen since the mask was taken
            p, ok = _not_excluded(ex, p, j)
            if ok:
                bv[cnt] = v
                bi[cnt] = j
                cnt += 1
                if cnt == 2 * k:
                    _select_pairs(bv, bi, cnt, k)
                    cnt = k
                    thr = bv[k - 1]
    return cnt, p, thr


@numba.njit
def _scan_pairs(row, k, ex, bv, bi, thr, listed):
    """The scan from ``thr`` into the candidate buffer bv/bi (2k), of every block, or of the
    blocks set in ``listed`` and the tail when it is not empty; returns how many it holds."""
    n_cols = row.shape[0]
    cnt = 0
    p = 0
    if listed.shape[0] == 0:
        for j0 in range(0, n_cols, _BLOCK):
            cnt, p, thr = _pairs_block(row, j0, k, ex, bv, bi, thr, cnt, p)
        return cnt
    for w in range(listed.shape[0]):
        bits = listed[w]
        while bits:
            j0 = _BLOCK * (64 * w + trailing_zeros(bits))
            bits &= bits - np.uint64(1)
            cnt, p, thr = _pairs_block(row, j0, k, ex, bv, bi, thr, cnt, p)
    n_full = n_cols - n_cols % _BLOCK
    if n_full < n_cols:
        cnt, p, thr = _pairs_block(row, n_full, k, ex, bv, bi, thr, cnt, p)
    return cnt


@numba.njit(inline="always")
def _topk_row(row, k, ex, bv, bi, keys, listed, hv, hi):
    """Best k of one row into hv/hi (sorted, padded); bv/bi: the (score, column) candidate
    buffer of 2k; keys and listed: the bound's (empty when the row starts from -inf). See the
    scan described above."""
    thr = _start(row, k, ex, keys, keys[:0], listed)
    cnt = _scan_pairs(row, k, ex, bv, bi, thr, listed)
    if cnt > k:
        _select_pairs(bv, bi, cnt, k)
        cnt = k
    for t in range(cnt):
        hv[t] = bv[t]
        hi[t] = bi[t]
    for t in range(cnt // 2 - 1, -1, -1):  # heapify, then sort best first
        sift_down(hv, hi, cnt, t)
    heap_sort(hv, hi, cnt)
    for t in range(cnt, k):
        hv[t] = -np.inf
        hi[t] = -1


# float32 rows (of fewer than 2**32 columns) pack each candidate into one uint64 key: the
# score's bits mapped to an unsigned integer of the same order (-0.0 first made +0.0, they are
# equal scores), then the complemented column, so that one integer comparison ranks (score
# desc, column asc): the same scan with half the selection work of (score, column) pairs.
_KEY_LOW = np.uint64(0xFFFFFFFF)


@numba.njit(inline="always")
def _f32_key(v, j):
    b = np.uint32(np.float32(v + np.float32(0.0)).view(np.uint32))
    flip = np.uint32(0xFFFFFFFF) if b >> np.uint32(31) else np.uint32(0x80000000)
    return (np.uint64(b ^ flip) << np.uint64(32)) | (_KEY_LOW - np.uint64(j))


@numba.njit(inline="always")
def _key_f32(key):
    b = np.uint32(key >> np.uint64(32))
    flip = np.uint32(0x80000000) if b >> np.uint32(31) else np.uint32(0xFFFFFFFF)
    return np.uint32(b ^ flip).view(np.float32)


@numba.njit(inline="always")
def _key_column(key):
    return np.int64(_KEY_LOW - (key & _KEY_LOW))


@numba.njit(inline="always")
def _f64_floor_key(x, j):
    """The key of the largest float32 not above the float64 x, with column j; branch-free (the
    map of floats to keys is contiguous but for the code of -0.0, which no key uses)."""
    f = np.float32(x)
    key = _f32_key(f, j)
    u = (key >> np.uint64(32)) - np.uint64(np.float64(f) > x)
    u -= np.uint64(u == np.uint64(0x7FFFFFFF))
    return (u << np.uint64(32)) | (key & _KEY_LOW)


@numba.njit(inline="always")
def _select_keys(a, n, k):
    """Reorder a[:n] (distinct keys, n > k) so that a[:k] are the k largest, a[k-1] the least
    of them.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (swap always,
    advance when above the pivot): expected O(n).
    """
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        med = max(min(x, y), min(max(x, y), z))
        if med == x:
            a[lo] = z
        elif med == y:
            a[mid] = z
        a[hi] = med
        s = lo
        for t in range(lo, hi):
            x = a[t]
            a[t] = a[s]
            a[s] = x
            s += np.int64(x > med)
        a[hi] = a[s]
        a[s] = med
        if s == k - 1:
            return
        if s > k - 1:
            hi = s - 1
        else:
            lo = s + 1


@numba.njit(inline="always")
def _key_sift_down(a, size, pos, key):
    """Place ``key`` at ``pos`` of the min-heap a[:size], moving it down as needed."""
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and a[c + 1] < a[c]:
            c += 1
        if a[c] >= key:
            break
        a[pos] = a[c]
        pos = c
    a[pos] = key


@numba.njit(inline="always")
def _keys_block(row, j0, k, ex, buf, thr, cnt, p):
    """One block of _scan_keys; returns its state (cnt, p, thr)."""
    block = row[j0 : j0 + _BLOCK]
    m = _block_hits(block, thr)
    while m:
        t = trailing_zeros(m)
        m &= m - np.uint64(1)
        v = block[t]
        if v > thr:  # thr may have risen since the mask was taken
            p, ok = _not_excluded(ex, p, j0 + t)
            if ok:
                buf[cnt] = _f32_key(v, j0 + t)
                cnt += 1
                if cnt == 2 * k:
                    _select_keys(buf, cnt, k)
                    cnt = k
                    thr = _key_f32(buf[k - 1])
    return cnt, p, thr


@numba.njit
def _scan_keys(row, k, ex, buf, thr, listed):
    """_scan_pairs with keys: the scan from ``thr`` into buf (2k); returns how many it holds."""
    n_cols = row.shape[0]
    cnt = 0
    p = 0
    if listed.shape[0] == 0:
        for j0 in range(0, n_cols, _BLOCK):
            cnt, p, thr = _keys_block(row, j0, k, ex, buf, thr, cnt, p)
        return cnt
    for w in range(listed.shape[0]):
        bits = listed[w]
        while bits:
            j0 = _BLOCK * (64 * w + trailing_zeros(bits))
            bits &= bits - np.uint64(1)
            cnt, p, thr = _keys_block(row, j0, k, ex, buf, thr, cnt, p)
    n_full = n_cols - n_cols % _BLOCK
    if n_full < n_cols:
        cnt, p, thr = _keys_block(row, n_full, k, ex, buf, thr, cnt, p)
    return cnt


@numba.njit(inline="always")
def _topk_row_f32(row, k, ex, buf, listed, hv, hi):
    """_topk_row for float32 rows of fewer than 2**32 columns, with the key buffer ``buf``
    (2k, and one per block where the row takes the bound)."""
    thr = _start(row, k, ex, buf, buf[:0], listed)
    cnt = _scan_keys(row, k, ex, buf, thr, listed)
    if cnt > k:
        _select_keys(buf, cnt, k)
        cnt = k
    _emit_keys(row, buf, cnt, k, hv, hi)


# Up to this many keys the output row is ordered by rank sort, beyond by heap sort: measured
# per row (Numba, Zen 4) rank / heap 0.14 / 0.23 us at 32 keys, 1.1 / 3.2 at 100, 4.8 / 10.6
# at 256, 18 / 24 at 512. The heap's sift-downs mispredict about every other step; the rank
# counts are branch-free vector compares.
_RANK_SORT_MAX = 256


@numba.njit(inline="always")
def _emit_keys(row, keys, cnt, k, hv, hi):
    """The best keys[:cnt] (cnt <= k) as a sorted, padded output row; keys holds 2 cnt (the
    upper half is scratch)."""
    base = 0
    if cnt <= _RANK_SORT_MAX:
        # Rank sort: a key's place is the number of keys above it (distinct keys: a
        # permutation), written to the scratch half.
        base = cnt
        for i in range(cnt):
            x = keys[i]
            r = 0
            for j in range(cnt):
                r += np.int64(keys[j] > x)
            keys[cnt + r] = x
    else:
        # Heap-sort the keys (a min-heap popped to the back leaves them descending).
        for t in range(cnt // 2 - 1, -1, -1):
            _key_sift_down(keys, cnt, t, keys[t])
        for end in range(cnt - 1, 0, -1):
            last = keys[end]
            keys[end] = keys[0]
            _key_sift_down(keys, end, 0, last)
    for t in range(cnt):
        j = _key_column(keys[base + t])
        hi[t] = j
        hv[t] = row[j]  # the stored score itself (a -0.0 stays -0.0)
    for t in range(cnt, k):
        hv[t] = -np.inf
        hi[t] = -1


# Vector-compress ("stream") form of the float32 row, used where the CPU has AVX-512 and
# k >= _COMPRESS_MIN_K (_COMPRESS): each 64-wide block is compared with the threshold at once
# (above_mask64) and the columns above it are appended with four 16-lane compress stores,
# whether or not there are any: no branch depends on the data, so nothing is mispredicted and
# the extra vector work hides under the memory stream. Every k appended columns become keys
# (_f32_key, reading the scores again from cache); 2k keys are cut back to k by a quickselect
# whose partitions are compress passes. It beats the bit-mask walk at k=100, streaming and
# from cache; at k=10 the walk is as fast streaming and faster from cache, hence the k
# threshold. Without AVX-512 LLVM expands the compress to scalar code, slower than the walk.
# Figures: benchmarks/README.md ("topk").
_COMPRESS = target_has_compress()
_COMPRESS_MIN_K = 32
_SLACK = _BLOCK + 16  # a block's appends land past the count before a flush; vector stores


@numba.njit(inline="always")
def _cut_keys(a, n, k, s):
    """Keep the k largest of the distinct keys a[:n] (n >= k) in a[:k] (in no order); returns
    the least of them. s: scratch of n + 16. Quickselect with a median-of-three pivot, each
    level counting then compressing the side that holds the answer; small ends scalar. When k
    is a small part of n (the bound's cut of a row's block maxima), a first level keeps the
    keys above a pivot sampled just above rank k, as Cython's fastrec_cut_keys."""
    src = a
    m = n
    need = k
    if n >= 512 and 8 * k <= n:
        for t in range(64):
            s[t] = a[t * (n // 64)]
        r = k * 64 // n + 4
        _select_keys(s, 64, r)
        pivot = s[r - 1]
        n8 = n - n % 8
        o = 0
        for i in range(0, n8, 8):
            o += compress8(a, i, 8, pivot, True, s, o)
        o += compress8(a, n8, n - n8, pivot, True, s, o)
        if o >= k:  # else (rarely) the pivot was above the k-th: the whole of a
            src = s
            m = o
    while True:
        if m <= 24:
            for t in range(m):
                s[t] = src[t]
            if m > need:
                _select_keys(s, m, need)
                least = s[need - 1]
            else:
                least = s[0]
                for t in range(1, m):
                    least = min(least, s[t])
            break
        x, y, z = src[0], src[m >> 1], src[m - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        m8 = m - m % 8
        above = count_above8(src, m8, m - m8, pivot)
        for i in range(0, m8, 8):
            above += count_above8(src, i, 8, pivot)
        if above == need - 1:
            least = pivot
            break
        side = above >= need
        o = 0
        for i in range(0, m8, 8):
            o += compress8(src, i, 8, pivot, side, s, o)
        o += compress8(src, m8, m - m8, pivot, side, s, o)
        if not side:
            need -= above + 1
        src = s
        m = o
    o = 0
    for i in range(0, n, 8):  # in place: each store lands at or before the vector it read
        o += compress8(a, i, min(8, n - i), least - np.uint64(1), True, a, o)
    return least


@numba.njit(cache=True)
def _drop_excluded(cols, c0, nc, ex, p):
    """Remove from cols[c0:nc] (ascending) those in ex[p:] (sorted); returns the new count."""
    o = c0
    n_ex = ex.shape[0]
    for t in range(c0, nc):
        j = cols[t]
        while p < n_ex and ex[p] < j:
            p += 1
        if not (p < n_ex and ex[p] == j):
            cols[o] = j
            o += 1
    return o


@numba.njit(inline="always")
def _columns_to_keys(row, cols, nc, keys, nk):
    for t in range(nc):
        j = np.int64(cols[t])
        keys[nk + t] = _f32_key(row[j], j)
    return nk + nc


@numba.njit
def _scan_stream(row, k, ex, keys, cols, s, thr, listed):
    """The stream form's scan from ``thr`` (of the full blocks set in ``listed`` when it is not
    empty); returns how many keys it holds (< 3k). A block holding an excluded column drops
    it from the columns it appended."""
    n_cols = row.shape[0]
    n_ex = ex.shape[0]
    n_words = listed.shape[0]
    nk = 0
    nc = 0
    p = 0
    n_full = n_cols - n_cols % _BLOCK
    w = -1
    bits = np.uint64(0)
    j0 = -_BLOCK
    # One loop body for both orders of blocks: as an inlined helper taking the arrays, it was
    # reference-counting them at every block (twice as slow).
    while True:
        if n_words == 0:
            j0 += _BLOCK
            if j0 >= n_full:
                break
        else:
            while bits == 0 and w + 1 < n_words:
                w += 1
                bits = listed[w]
            if bits == 0:
                break
            j0 = _BLOCK * (64 * w + trailing_zeros(bits))
            bits &= bits - np.uint64(1)
        m = above_mask64(row, j0, thr)
        c0 = nc
        for q in range(0, _BLOCK, 16):
            nc = append_columns16(j0 + q, m >> np.uint64(q), cols, nc)
        while p < n_ex and ex[p] < j0:
            p += 1
        if p < n_ex and ex[p] < j0 + _BLOCK:
            nc = _drop_excluded(cols, c0, nc, ex, p)
        if nc >= k:
            nk = _columns_to_keys(row, cols, nc, keys, nk)
            nc = 0
            if nk >= 2 * k:
                thr = _key_f32(_cut_keys(keys, nk, k, s))
                nk = k
    nk = _columns_to_keys(row, cols, nc, keys, nk)
    for j in range(n_full, n_cols):
        v = row[j]
        if v > thr:
            p, ok = _not_excluded(ex, p, j)
            if ok:
                keys[nk] = _f32_key(v, j)
                nk += 1
    return nk


@numba.njit(inline="always")
def _topk_row_f32_compress(row, k, ex, keys, cols, s, listed, hv, hi):
    """_topk_row_f32 in the stream form above; keys and s of 3k + _SLACK (and of a block
    count + 16 where the row takes the bound), cols of k + _SLACK."""
    thr = _start(row, k, ex, keys, s, listed)
    nk = _scan_stream(row, k, ex, keys, cols, s, thr, listed)
    if nk > k:
        _cut_keys(keys, nk, k, s)
        nk = k
    _emit_keys(row, keys, nk, k, hv, hi)


_TOPK_GROUP = 8


# n_blocks: the blocks a row's bound ranks, 0 when the rows start from -inf (_bound_blocks).
@numba.njit(parallel=True, cache=True)
def _topk_impl(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val, n_blocks):
    n = scores.shape[0]
    empty = ex_indices[:0]
    # Rows in groups of _TOPK_GROUP, one candidate buffer per group (not one per row).
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        bv = np.empty(2 * k, scores.dtype)
        bi = np.empty(2 * k, np.int64)
        keys = np.empty(n_blocks, np.uint64)
        listed = np.empty((n_blocks + 63) // 64, np.uint64)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row(scores[r], k, ex, bv, bi, keys, listed, out_val[r], out_idx[r])


@numba.njit(parallel=True, cache=True)
def _topk_impl_f32(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val, n_blocks):
    n = scores.shape[0]
    empty = ex_indices[:0]
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        buf = np.empty(max(2 * k, n_blocks), np.uint64)
        listed = np.empty((n_blocks + 63) // 64, np.uint64)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row_f32(scores[r], k, ex, buf, listed, out_val[r], out_idx[r])


@numba.njit(parallel=True, cache=True)
def _topk_impl_f32_compress(scores, k, ex_indptr, ex_indices, has_mask, out_idx, out_val, n_blocks):
    n = scores.shape[0]
    empty = ex_indices[:0]
    for g in numba.prange((n + _TOPK_GROUP - 1) // _TOPK_GROUP):
        keys = np.empty(max(3 * k + _SLACK, n_blocks + 16), np.uint64)
        s = np.empty(max(3 * k + _SLACK, n_blocks + 16), np.uint64)
        cols = np.empty(k + _SLACK, np.uint32)
        listed = np.empty((n_blocks + 63) // 64, np.uint64)
        for r in range(g * _TOPK_GROUP, min(n, (g + 1) * _TOPK_GROUP)):
            ex = ex_indices[ex_indptr[r] : ex_indptr[r + 1]] if has_mask else empty
            _topk_row_f32_compress(scores[r], k, ex, keys, cols, s, listed, out_val[r], out_idx[r])


@numba.njit(inline="always")
def _mark_excluded(m_indptr, m_indices, row, mark):
    """Flag the touched items of a mask row as excluded (untouched ones are not candidates)."""
    for q in range(m_indptr[row], m_indptr[row + 1]):
        if mark[m_indices[q]] == 1:
            mark[m_indices[q]] = 2


@numba.njit(parallel=True, cache=True)
def _recommend_impl(
    a_indptr,
    a_indices,
    a_data,
    b_indptr,
    b_indices,
    b_data,
    n_items,
    rows,
    n,
    seen_indptr,
    seen_indices,
    has_seen,
    ex_indptr,
    ex_indices,
    has_ex,
    n_chunks,
    out_idx,
    out_val,
):
    n_rows = rows.shape[0]
    # One chunk of rows per task with its own buffers: at most one chunk per thread runs at a
    # time, so memory is O(threads * n_items); chunks keep the load balanced.
    for c in numba.prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float64)
        mark = np.zeros(n_items, dtype=np.uint8)
        touched = np.empty(n_items + 1, dtype=np.int64)  # +1: the branch-free spare write
        rounded = np.empty(1, dtype=out_val.dtype)
        for r in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            row = rows[r]
            hv = out_val[r]  # the heap lives in the output row
            hi = out_idx[r]
            n_touched = 0
            # float64 sums in the reference's order (A's stored order, then B's).
            for p in range(a_indptr[row], a_indptr[row + 1]):
                a = np.float64(a_data[p])
                i = a_indices[p]
                for q in range(b_indptr[i], b_indptr[i + 1]):
                    j = b_indices[q]
                    # Branch-free first-touch bookkeeping: whether j is new is unpredictable,
                    # so always write the slot and advance only for a new item.
                    touched[n_touched] = j
                    n_touched += 1 - mark[j]
                    mark[j] = 1
                    acc[j] += a * np.float64(b_data[q])
            if has_seen:
                _mark_excluded(seen_indptr, seen_indices, row, mark)
            if has_ex:
                _mark_excluded(ex_indptr, ex_indices, row, mark)
            size = 0
            for t in range(n_touched):
                j = touched[t]
                # Ranked as returned (rounded to the output dtype, as the reference), so
                # sums that round to the same float32 are tied and go to the smaller item.
                rounded[0] = acc[j]
                v = rounded[0]
                if mark[j] == 1 and v > -np.inf:  # rejects NaN and -inf
                    size = heap_offer(hv, hi, size, n, v, np.int64(j))
                acc[j] = 0.0
                mark[j] = 0
            heap_sort(hv, hi, size)
            for t in range(size, n):
                hv[t] = -np.inf
                hi[t] = -1


# ---- what this backend gives the shared host layer (kernels/_host.py) -------------------------


def _run_topk(call, n_threads):
    scores, k = call.scores, call.k
    if scores.dtype == np.float32 and scores.shape[1] < 2**32:
        impl = _topk_impl_f32_compress if _COMPRESS and k >= _COMPRESS_MIN_K else _topk_impl_f32
    else:
        impl = _topk_impl
    with threads(n_threads):
        impl(*call, _bound_blocks(scores.shape[1], k, _bounding))


def _run_recommend(call, n_threads):
    # Chunks depend on n_threads but each row's result does not: rows are independent.
    n_chunks = max(1, min(call.rows.shape[0], 16 * int(n_threads)))
    with threads(n_threads):
        _recommend_impl(*call[:-2], n_chunks, call.out_idx, call.out_val)


LOOPS = _host.RankingLoops(
    topk_index_type=lambda scores, k, mask_itype: mask_itype,
    topk=_run_topk,
    recommend=_run_recommend,
    pad_empty=False,
)

topk = _host.bind(_host.topk, LOOPS, __name__)
recommend = _host.bind(_host.recommend, LOOPS, __name__)
