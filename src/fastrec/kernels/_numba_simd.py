"""Vector primitives for the Numba kernels, written as LLVM IR intrinsics: compress, count,
a 64-lane comparison mask, a 64-lane maximum, and a cache-line prefetch.

LLVM does not vectorise a compress loop (``if x > t: out[n] = x; n += 1``) by itself, and on
CPUs with AVX-512 (vpcompress) the explicit form is several times faster for the top-k
candidate buffer. ``llvm.experimental.vector.compress`` is portable: LLVM expands it to
scalar code on CPUs without a compress instruction, with the same results.

The compress functions store whole vectors: an appended run of m entries at ``out[o:]``
writes ``out[o:o + 8]`` (``o + 16`` for columns) with garbage past ``o + m``, so output arrays
need 16 slots of slack past what they hold. Reads likewise load whole vectors and mask the
lanes past ``n_valid``, so inputs need the same slack. Arrays must be C-contiguous.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8 = ir.VectorType(_I64, 8)


def _splat(builder, value, vtype):
    v = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, vtype.count), [0] * vtype.count)
    return builder.shuffle_vector(v, ir.Constant(vtype, ir.Undefined), zeros)


def _pointer(context, builder, arrty, arr, index):
    return builder.gep(context.make_array(arrty)(context, builder, arr).data, [index])


def _load(builder, ptr, vtype, align):
    return builder.load(builder.bitcast(ptr, vtype.as_pointer()), align=align)


def _popcount(builder, mask):
    bits = builder.bitcast(mask, ir.IntType(mask.type.count))
    ctpop = builder.module.declare_intrinsic("llvm.ctpop", [bits.type])
    return builder.zext(builder.call(ctpop, [bits]), _I64)


def _compress_store(builder, vec, mask, ptr):
    """Store the lanes of vec selected by mask contiguously at ptr (a whole vector is written)."""
    vtype = vec.type
    fnty = ir.FunctionType(vtype, [vtype, mask.type, vtype])
    fn = cgutils.get_or_insert_function(
        builder.module, fnty, f"llvm.experimental.vector.compress.v{vtype.count}i64"
    )
    packed = builder.call(fn, [vec, mask, ir.Constant(vtype, ir.Undefined)])
    builder.store(packed, builder.bitcast(ptr, vtype.as_pointer()), align=8)


def _lanes_below(builder, n_valid):
    return builder.icmp_unsigned(
        "<", ir.Constant(_V8, list(range(8))), _splat(builder, n_valid, _V8)
    )


def _c_array(ty, dtype):
    return isinstance(ty, types.Array) and ty.ndim == 1 and ty.layout == "C" and ty.dtype == dtype


@intrinsic
def count_above8(typingctx, keys, i, n_valid, pivot):
    """How many of keys[i:i + n_valid] (n_valid <= 8, uint64) are > pivot."""
    if not _c_array(keys, types.uint64):
        return None
    sig = types.int64(keys, types.int64, types.int64, types.uint64)

    def codegen(context, builder, signature, args):
        keys_v, i_v, n_v, pivot_v = args
        vec = _load(builder, _pointer(context, builder, signature.args[0], keys_v, i_v), _V8, 8)
        above = builder.icmp_unsigned(">", vec, _splat(builder, pivot_v, _V8))
        return _popcount(builder, builder.and_(above, _lanes_below(builder, n_v)))

    return sig, codegen


@intrinsic
def compress8(typingctx, keys, i, n_valid, pivot, above, out, o):
    """Store the keys of keys[i:i + n_valid] (n_valid <= 8, uint64) that are > pivot (``above``)
    or < pivot (not ``above``) contiguously at out[o:], in their order; returns how many.
    ``out`` may be ``keys`` itself when o <= i (the vector is loaded before the store)."""
    if not (_c_array(keys, types.uint64) and _c_array(out, types.uint64)):
        return None
    sig = types.int64(keys, types.int64, types.int64, types.uint64, types.boolean, out, types.int64)

    def codegen(context, builder, signature, args):
        keys_v, i_v, n_v, pivot_v, above_v, out_v, o_v = args
        vec = _load(builder, _pointer(context, builder, signature.args[0], keys_v, i_v), _V8, 8)
        pivot = _splat(builder, pivot_v, _V8)
        side = builder.select(
            above_v, builder.icmp_unsigned(">", vec, pivot), builder.icmp_unsigned("<", vec, pivot)
        )
        mask = builder.and_(side, _lanes_below(builder, n_v))
        _compress_store(
            builder, vec, mask, _pointer(context, builder, signature.args[5], out_v, o_v)
        )
        return _popcount(builder, mask)

    return sig, codegen


@intrinsic
def above_mask64(typingctx, row, j, thr):
    """Bit t set when row[j + t] > thr, for t < 64 (float32; NaN never is): one vector
    comparison of the block, its lanes packed into an integer."""
    if not _c_array(row, types.float32):
        return None
    sig = types.uint64(row, types.int64, types.float32)

    def codegen(context, builder, signature, args):
        row_v, j_v, thr_v = args
        f64x = ir.VectorType(ir.FloatType(), 64)
        vals = _load(builder, _pointer(context, builder, signature.args[0], row_v, j_v), f64x, 4)
        above = builder.fcmp_ordered(">", vals, _splat(builder, thr_v, f64x))
        return builder.bitcast(above, _I64)

    return sig, codegen


@intrinsic
def max64(typingctx, row, j):
    """The largest of row[j:j + 64] that is not NaN (float32 or float64), -inf when none: one
    vector load, NaN lanes made -inf, a vector max reduction (a scalar loop of
    ``m = v if v > m else m`` does not vectorise: each step waits on the last)."""
    if not (_c_array(row, types.float32) or _c_array(row, types.float64)):
        return None
    sig = row.dtype(row, types.int64)

    def codegen(context, builder, signature, args):
        row_v, j_v = args
        ftype = ir.FloatType() if signature.args[0].dtype == types.float32 else ir.DoubleType()
        vtype = ir.VectorType(ftype, 64)
        vals = _load(builder, _pointer(context, builder, signature.args[0], row_v, j_v), vtype, 4)
        ninf = _splat(builder, ir.Constant(ftype, float("-inf")), vtype)
        vals = builder.select(builder.fcmp_unordered("uno", vals, vals), ninf, vals)
        # A tree of halves, each step select(a > b, a, b): maxps's own rule, so one
        # instruction (llvm.vector.reduce.fmax without nnan expands to a slow chain).
        n = 64
        while n > 1:
            n //= 2
            lo = builder.shuffle_vector(
                vals, vals, ir.Constant(ir.VectorType(_I32, n), list(range(n)))
            )
            hi = builder.shuffle_vector(
                vals, vals, ir.Constant(ir.VectorType(_I32, n), list(range(n, 2 * n)))
            )
            vals = builder.select(builder.fcmp_ordered(">", lo, hi), lo, hi)
        return builder.extract_element(vals, ir.Constant(_I32, 0))

    return sig, codegen


@intrinsic
def append_columns16(typingctx, j, mask, out, o):
    """Append at out[o:] (uint32) the columns j + t, t < 16, whose bit t is set in ``mask``,
    in order; returns the new count. A whole 16-lane vector is stored."""
    if not _c_array(out, types.uint32):
        return None
    sig = types.int64(types.int64, types.uint64, out, types.int64)

    def codegen(context, builder, signature, args):
        j_v, mask_v, out_v, o_v = args
        v16 = ir.VectorType(_I32, 16)
        cols = builder.add(
            _splat(builder, builder.trunc(j_v, _I32), v16), ir.Constant(v16, list(range(16)))
        )
        mask = builder.bitcast(
            builder.trunc(mask_v, ir.IntType(16)), ir.VectorType(ir.IntType(1), 16)
        )
        fnty = ir.FunctionType(v16, [v16, mask.type, v16])
        fn = cgutils.get_or_insert_function(
            builder.module, fnty, "llvm.experimental.vector.compress.v16i32"
        )
        packed = builder.call(fn, [cols, mask, ir.Constant(v16, ir.Undefined)])
        ptr = _pointer(context, builder, signature.args[2], out_v, o_v)
        builder.store(packed, builder.bitcast(ptr, v16.as_pointer()), align=4)
        return builder.add(o_v, _popcount(builder, mask))

    return sig, codegen


def target_has_compress() -> bool:
    """Whether Numba compiles for a CPU with AVX-512F (vpcompress): where the compress form
    pays. Elsewhere LLVM's scalar expansion of a compress makes top-k slower than the
    bit-mask walk (NUMBA_CPU_NAME=haswell or x86-64 show it)."""
    import llvmlite.binding as llvm
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


@intrinsic
def prefetch_line(typingctx, X, row, offset):
    """Hint the CPU to fetch the cache line at byte ``offset`` of row ``row`` of the C-order 2-D
    array X into cache (llvm.prefetch: read, high locality); no effect on results."""
    if not (isinstance(X, types.Array) and X.ndim == 2 and X.layout == "C"):
        return None
    sig = types.void(X, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        X_v, row_v, off_v = args
        ary = context.make_array(signature.args[0])(context, builder, X_v)
        row_bytes = builder.extract_value(ary.strides, 0)
        i8p = ir.IntType(8).as_pointer()
        base = builder.bitcast(ary.data, i8p)
        ptr = builder.gep(base, [builder.add(builder.mul(row_v, row_bytes), off_v)])
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return sig, codegen
