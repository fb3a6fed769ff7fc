"""GPU benchmark: fastrec's CUDA backend against PyTorch and CuPy, checked against the CPU backend.

One run, about 5-7 minutes, on a machine with an NVIDIA GPU, from the repository root:

    python benchmarks/gpu_bench.py                    # every case
    python benchmarks/gpu_bench.py --cases topk sigmoid_dense
    python benchmarks/gpu_bench.py --cases dot_topk     # embedding top-k vs torch (~2 min)

fastrec is imported from ./src (no install needed; the Cython backend is not used). Data: the
shapes of DESIGN.md's performance notes and benchmarks/datasets.py. Dense inputs are generated on
the device (Numba's xoroshiro128p, seeded); the sparse interaction matrices come from
datasets.generate (host, seeded) and are moved to the device once, before timing. fastrec's
kernels are called with device arrays, so times exclude host transfers (torch and CuPy get the
same device memory, zero-copy). Each time is the median of several runs after one warm-up run
(which also compiles the kernels), the device synchronised around each. Every fastrec result is
checked against the NumPy reference backend (on a slice of rows where the reference would be
too slow), and against torch where both compute the same thing. Each case is independent: an
error is printed in its row and the run goes on. PyTorch or CuPy missing: their rows say so.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

_missing = []
for _name in ("numpy", "scipy", "numba", "numba.cuda"):
    try:
        __import__(_name)
    except Exception as _exc:
        _missing.append(f"{_name} ({type(_exc).__name__}: {_exc})")
if _missing:
    sys.exit(
        "gpu_bench needs numpy<2.5, scipy, numba and numba-cuda; cannot import: "
        + "; ".join(_missing)
    )

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from comparators import assert_topk_equal  # noqa: E402
from numba import cuda  # noqa: E402
from numba.cuda.random import (  # noqa: E402
    create_xoroshiro128p_states,
    xoroshiro128p_uniform_float32,
)

import fastrec  # noqa: E402
from fastrec.kernels import numba_cuda as C  # noqa: E402

C_topk = importlib.import_module("fastrec.kernels.numba_cuda.topk")
C_scoring = importlib.import_module("fastrec.kernels.numba_cuda.scoring")
C_device = importlib.import_module("fastrec.kernels.numba_cuda._device")
C_embedding = importlib.import_module("fastrec.kernels.numba_cuda.embedding")

try:
    import torch
except Exception as exc:
    torch, TORCH_WHY = None, f"{type(exc).__name__}: {exc}"
try:
    import cupy as cp
    import cupyx.scipy.sparse as cpsp
except Exception as exc:
    cp, CUPY_WHY = None, f"{type(exc).__name__}: {exc}"

FILL_GRID = (2, 32) if C._SIM else (1024, 256)  # blocks, threads of the data generators
ROWS: list[tuple] = []  # (case, implementation, seconds or None, metric, check or error)
CASE_SECONDS = 40.0  # time budget for the repetitions of one implementation
# Problem sizes; --dry-run shrinks them so the script itself can be exercised on the simulator.
SIZES = {
    "dense_rows": 2_000_000,
    "csr_rows": 2_000_000,
    "csr_cols": 1 << 20,
    "topk_rows": 4096,
    "topk_cols": 100_000,
    "check_rows": 100_000,
    "rec_users": 8192,
    "cos_check": 512,
    "small": datasets.SIZES["small"],
    "large": datasets.SIZES["large"],
    "emb_users": 50_000,
    "emb_items": (20_000, 100_000),
    "emb_factors": 64,
    "emb_block": 8192,
}
TINY = {
    "dense_rows": 300,
    "csr_rows": 200,
    "csr_cols": 500,
    "topk_rows": 5,
    "topk_cols": 700,
    "check_rows": 50,
    "rec_users": 6,
    "cos_check": 20,
    "small": (60, 30, 300),
    "large": (80, 40, 500),
    "emb_users": 40,
    "emb_items": (150, 300),
    "emb_factors": 12,
    "emb_block": 16,
}


# ---- helpers --------------------------------------------------------------------------------


def sync():
    cuda.synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
    if cp is not None:
        cp.cuda.Device().synchronize()


def timed(fn, reps=7, budget=CASE_SECONDS):
    """Median seconds of fn() over up to ``reps`` runs after one warm-up, within ``budget``."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    n = max(1, min(reps, int(budget / max(first, 1e-6))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def record(case, impl, fn_or_seconds, metric=None, check=""):
    """Time one implementation (or take a given time) and add a row; errors become rows."""
    try:
        seconds = fn_or_seconds() if callable(fn_or_seconds) else fn_or_seconds
        ROWS.append((case, impl, seconds, metric(seconds) if metric else "", check))
        return seconds
    except Exception as exc:
        ROWS.append((case, impl, None, "", f"ERROR {type(exc).__name__}: {str(exc)[:160]}"))
        traceback.print_exc()
        return None


def skip(case, impl, why):
    ROWS.append((case, impl, None, "", f"skipped: {why}"))


def device_uniform(shape, seed, lo=-1.0, hi=1.0, dtype=np.float32):
    """A C-contiguous device array of uniform values, generated on the device."""
    out = cuda.device_array(shape, dtype=dtype)
    flat = out.reshape(out.size)
    blocks, threads = FILL_GRID
    states = create_xoroshiro128p_states(threads * blocks, seed=seed)
    _fill_uniform[blocks, threads](flat, states, lo, hi)
    return out


@cuda.jit
def _fill_uniform(out, states, lo, hi):
    tid = cuda.grid(1)
    for i in range(tid, out.shape[0], cuda.gridsize(1)):
        out[i] = lo + (hi - lo) * xoroshiro128p_uniform_float32(states, tid)


@cuda.jit
def _fill_indices(out, states, n_cols):
    tid = cuda.grid(1)
    for i in range(tid, out.shape[0], cuda.gridsize(1)):
        out[i] = min(n_cols - 1, int(xoroshiro128p_uniform_float32(states, tid) * n_cols))


def free():
    gc.collect()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if cp is not None:
        cp.get_default_memory_pool().free_all_blocks()


def max_abs(a, b):
    return (
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        if np.size(a)
        else 0.0
    )


def verdict(ok, detail):
    return ("ok " if ok else "MISMATCH ") + detail


# ---- cases ----------------------------------------------------------------------------------


def case_sigmoid_dense():
    case = "sigmoid dense 2M x 64 fp32"
    n, d, b = SIZES["dense_rows"], 64, 0.1
    X = device_uniform((n, d), seed=1)
    w = np.random.default_rng(2).normal(size=d) / 4
    dw = cuda.to_device(w)
    out = cuda.device_array(n, dtype=np.float32)
    C.sigmoid_dense(X, dw, b, out, None)
    sync()
    m = SIZES["check_rows"]
    want = fastrec.sigmoid_scores(X[:m].copy_to_host(), w, b, backend="numpy")
    got = out.copy_to_host()
    err = max_abs(got[:m], want)
    check = verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy ({m} rows)")
    gbs = lambda s: f"{n * d * 4 / s / 1e12:.2f} TB/s read"  # noqa: E731
    record(
        case,
        "fastrec cuda kernel (tiles of rows in shared memory)",
        lambda: timed(lambda: C.sigmoid_dense(X, dw, b, out, None)),
        gbs,
        check,
    )
    for rows in (4, 8):  # the row-batch kernel (few rows) at two batch sizes: tuning evidence
        kern = C_scoring._dense_row_kernels(rows)[0]
        grid, lanes = C_scoring._dense_launch(n, d, rows)
        threads = C_scoring._DENSE_THREADS

        def variant(kern=kern, grid=grid, lanes=lanes, threads=threads):
            kern[grid, threads](X, dw, b, out, lanes)

        variant()
        sync()
        err_v = max_abs(out.copy_to_host()[:m], want)
        record(
            case,
            f"  variant: row-batch kernel, {rows} rows a warp at once",
            lambda: timed(variant),
            gbs,
            verdict(err_v <= 1e-5, f"max|diff| {err_v:.1e}"),
        )
    # The public API on device arrays: adds the device checks (w finite; one pass over the
    # scores proving X finite), no host copies.
    fastrec.sigmoid_scores(X, dw, b, out=out)
    err = max_abs(out.copy_to_host()[:m], want)
    record(
        case,
        "fastrec.sigmoid_scores(device X, w, out)",
        lambda: timed(lambda: fastrec.sigmoid_scores(X, dw, b, out=out)),
        gbs,
        verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy"),
    )
    if torch is None:
        return skip(case, "torch sigmoid(X @ w + b)", TORCH_WHY)
    Xt = torch.as_tensor(X, device="cuda")
    wt = torch.as_tensor(w.astype(np.float32), device="cuda")
    record(
        case,
        "fastrec.sigmoid_scores(torch X, torch w)",
        lambda: timed(lambda: fastrec.sigmoid_scores(Xt, wt, b)),
        gbs,
    )
    p = torch.sigmoid(Xt @ wt + b)
    err = max_abs(p.cpu().numpy()[:m], want)
    record(
        case,
        "torch sigmoid(X @ w + b)",
        lambda: timed(lambda: torch.sigmoid(Xt @ wt + b)),
        gbs,
        verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy"),
    )


def case_sigmoid_csr():
    case = "sigmoid CSR 2M x 2^20, 40 nnz/row"
    n, m, per_row, b = SIZES["csr_rows"], SIZES["csr_cols"], 40, -0.2
    indptr = cuda.to_device(np.arange(0, n * per_row + 1, per_row, dtype=np.int32))
    indices = cuda.device_array(n * per_row, dtype=np.int32)
    blocks, threads = FILL_GRID
    _fill_indices[blocks, threads](
        indices, create_xoroshiro128p_states(blocks * threads, seed=3), m
    )
    data = device_uniform(n * per_row, seed=4, lo=0.0, hi=1.0)
    w = np.random.default_rng(5).normal(size=m) / 4
    dw = cuda.to_device(w)
    out = cuda.device_array(n, dtype=np.float32)
    C.sigmoid_csr(indptr, indices, data, dw, b, out, None)
    sync()
    rows = SIZES["check_rows"]
    nz = rows * per_row
    host = sp.csr_matrix(
        (data[:nz].copy_to_host(), indices[:nz].copy_to_host(), indptr[: rows + 1].copy_to_host()),
        shape=(rows, m),
    )
    want = fastrec.sigmoid_scores(host, w, b, backend="numpy")
    err = max_abs(out.copy_to_host()[:rows], want)
    check = verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy ({rows} rows)")
    mrows = lambda s: f"{n / s / 1e6:.0f} Mrows/s"  # noqa: E731
    record(
        case,
        "fastrec cuda (warp per row)",
        lambda: timed(lambda: C.sigmoid_csr(indptr, indices, data, dw, b, out, None)),
        mrows,
        check,
    )
    if cp is None:
        skip(case, "cupy CSR @ w, then sigmoid", CUPY_WHY)
    else:
        A = cpsp.csr_matrix(
            (cp.asarray(data), cp.asarray(indices), cp.asarray(indptr)), shape=(n, m)
        )
        wc = cp.asarray(w.astype(np.float32))
        f = lambda: 1.0 / (1.0 + cp.exp(-(A @ wc + b)))  # noqa: E731
        err = max_abs(cp.asnumpy(f())[:rows], want)
        record(
            case,
            "cupy CSR @ w, then sigmoid",
            lambda: timed(f),
            mrows,
            verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy"),
        )
    if torch is None:
        skip(case, "torch CSR @ w, then sigmoid", TORCH_WHY)
    else:
        A = torch.sparse_csr_tensor(
            torch.as_tensor(indptr, device="cuda").long(),
            torch.as_tensor(indices, device="cuda").long(),
            torch.as_tensor(data, device="cuda"),
            size=(n, m),
        )
        wt = torch.as_tensor(w.astype(np.float32), device="cuda")
        f = lambda: torch.sigmoid(A @ wt + b)  # noqa: E731
        err = max_abs(f().cpu().numpy()[:rows], want)
        record(
            case,
            "torch CSR @ w, then sigmoid",
            lambda: timed(f),
            mrows,
            verdict(err <= 1e-5, f"max|diff| {err:.1e} vs numpy"),
        )


def case_logistic_loss_grad():
    case = "logistic loss+grad 2M x 64 fp32"
    n, d, b = SIZES["dense_rows"], 64, 0.1
    X = device_uniform((n, d), seed=6)
    w = np.random.default_rng(7).normal(size=d) / 4
    y_host = (np.random.default_rng(8).random(n) < 0.3).astype(np.float64)
    dw, dy, dsw = cuda.to_device(w), cuda.to_device(y_host), cuda.to_device(np.ones(n))
    f = lambda: C.logistic_loss_grad_dense(X, dy, dw, b, 0.0, dsw, None)  # noqa: E731
    rows = 2 * SIZES["check_rows"]
    Xh = X[:rows].copy_to_host()
    loss, grad, gb = C.logistic_loss_grad_dense(
        cuda.to_device(Xh),
        cuda.to_device(y_host[:rows]),
        dw,
        b,
        0.0,
        cuda.to_device(np.ones(rows)),
        None,
    )
    wl, wg, wb = fastrec.logistic_loss_grad(Xh, y_host[:rows], w, b, backend="numpy")
    grad = grad.copy_to_host()
    err = max(abs(loss - wl), max_abs(grad, wg), abs(gb - wb))
    check = verdict(err <= 1e-10, f"max|diff| {err:.1e} vs numpy ({rows} rows)")
    gbs = lambda s: f"{2 * n * d * 4 / s / 1e12:.2f} TB/s (2 reads)"  # noqa: E731
    record(case, "fastrec cuda (2 passes, fp64 sums)", lambda: timed(f), gbs, check)
    record(
        case,
        "fastrec.logistic_loss_grad(device X, y, w, sw)",
        lambda: timed(lambda: fastrec.logistic_loss_grad(X, dy, dw, b, sample_weight=dsw)),
        gbs,
    )
    if torch is None:
        return skip(case, "torch (fp32 matmuls, autograd-free)", TORCH_WHY)
    Xt = torch.as_tensor(X, device="cuda")
    wt = torch.as_tensor(w.astype(np.float32), device="cuda")
    yt = torch.as_tensor(y_host.astype(np.float32), device="cuda")

    def torch_loss_grad():
        z = Xt @ wt + b
        loss = (torch.nn.functional.softplus(z) - yt * z).mean()
        r = (torch.sigmoid(z) - yt) / n
        return loss.item(), Xt.T @ r, r.sum().item()

    record(case, "torch (fp32 matmuls, autograd-free)", lambda: timed(torch_loss_grad), gbs)


def case_logistic_csr():
    case = "logistic loss+grad CSR 2M x 2^20, 40 nnz/row"
    n, m, per_row, b = SIZES["csr_rows"], SIZES["csr_cols"], 40, -0.2
    indptr = cuda.to_device(np.arange(0, n * per_row + 1, per_row, dtype=np.int32))
    # Sorted, distinct columns per row (canonical CSR): row r uses columns (c0 + t*step) mod m.
    host_idx = (
        np.random.default_rng(11).integers(0, m, n)[:, None]
        + np.arange(per_row)[None, :] * (m // per_row)
    ) % m
    host_idx.sort(axis=1)
    indices = cuda.to_device(host_idx.astype(np.int32).ravel())
    data = device_uniform(n * per_row, seed=12, lo=0.0, hi=1.0)
    w = np.random.default_rng(13).normal(size=m) / 4
    y = (np.random.default_rng(14).random(n) < 0.3).astype(np.float64)
    dw, dy, dsw = cuda.to_device(w), cuda.to_device(y), cuda.to_device(np.ones(n))

    def f():
        return C.logistic_loss_grad_csr(indptr, indices, data, dy, dw, b, 0.0, dsw, None)

    runs = [f()[1].copy_to_host() for _ in range(3)]
    same = all(np.array_equal(runs[0], r) for r in runs[1:])
    rows = SIZES["check_rows"]
    nz = rows * per_row
    host = sp.csr_matrix(
        (data[:nz].copy_to_host(), indices[:nz].copy_to_host(), indptr[: rows + 1].copy_to_host()),
        shape=(rows, m),
    )
    got = C.logistic_loss_grad_csr(
        host.indptr, host.indices, host.data, y[:rows], w, b, 0.0, np.ones(rows), None
    )
    want = fastrec.logistic_loss_grad(host, y[:rows], w, b, backend="numpy")
    err = max(abs(got[0] - want[0]), max_abs(got[1], want[1]), abs(got[2] - want[2]))
    check = verdict(
        err <= 1e-10 and same,
        f"max|diff| {err:.1e} vs numpy ({rows} rows); "
        f"3 runs {'bit-identical' if same else 'DIFFER'}",
    )
    mrows = lambda s: f"{n / s / 1e6:.0f} Mrows/s"  # noqa: E731
    record(
        case,
        "fastrec cuda (deterministic: exact pre-rounded atomics)",
        lambda: timed(f),
        mrows,
        check,
    )
    if cp is None:
        return skip(case, "cupy CSR: sigmoid(A @ w + b), A.T @ r", CUPY_WHY)
    A = cpsp.csr_matrix(
        (cp.asarray(data).astype(cp.float64), cp.asarray(indices), cp.asarray(indptr)), shape=(n, m)
    )
    wc, yc = cp.asarray(w), cp.asarray(y)

    def cupy_loss_grad():
        z = A @ wc + b
        loss = float(cp.mean(cp.logaddexp(0, z) - yc * z))
        r = (1.0 / (1.0 + cp.exp(-z)) - yc) / n
        return loss, A.T @ r, float(r.sum())

    record(case, "cupy CSR fp64: sigmoid(A @ w + b), A.T @ r", lambda: timed(cupy_loss_grad), mrows)


def case_topk():
    case = "topk 4096 x 100k fp32, k=100"
    n, m, k = SIZES["topk_rows"], SIZES["topk_cols"], 100
    S = device_uniform((n, m), seed=9)
    idx, val = C.topk(S, k, None, None, None)
    sync()
    rows = min(32, n)
    want = fastrec.topk(S[:rows].copy_to_host(), k, backend="numpy")
    try:
        assert_topk_equal((idx[:rows].copy_to_host(), val[:rows].copy_to_host()), want, exact=True)
        check = f"ok exact vs numpy ({rows} rows)"
    except AssertionError as exc:
        check = f"MISMATCH vs numpy: {str(exc)[:120]}"
    gbs = lambda s: f"{n * m * 4 / s / 1e12:.2f} TB/s read"  # noqa: E731
    record(
        case,
        "fastrec cuda kernel (warp per row)",
        lambda: timed(lambda: C.topk(S, k, None, None, None)),
        gbs,
        check,
    )
    # The warp kernel's tuning evidence: loads per lane per step, the next step's loads issued
    # before this step is filtered (pipelined) or not, ptxas's register cap (resident warps).
    knobs = ("_WARP_ITEMS", "_WARP_PIPELINE", "_WARP_MAX_REGISTERS")
    default = tuple(getattr(C_topk, name) for name in knobs)
    for variant in (
        (8, False, None),
        (16, True, None),
        (4, True, None),
        (8, True, 64),
        (8, True, 80),
    ):
        if variant == default:
            continue
        for name, value in zip(knobs, variant):
            setattr(C_topk, name, value)
        try:
            vidx, vval = C.topk(S, k, None, None, None)
            same = np.array_equal(vidx.copy_to_host(), idx.copy_to_host()) and np.array_equal(
                vval.copy_to_host(), val.copy_to_host()
            )
            items, pipelined, regs = variant
            record(
                case,
                f"  variant: {items} loads per lane, {'' if pipelined else 'not '}pipelined, "
                f"registers {regs or 'uncapped'}",
                lambda: timed(lambda: C.topk(S, k, None, None, None)),
                gbs,
                verdict(same, "identical"),
            )
        finally:
            for name, value in zip(knobs, default):
                setattr(C_topk, name, value)
    old_min_rows = C_topk._WARP_TOPK_MIN_ROWS
    C_topk._WARP_TOPK_MIN_ROWS = 1 << 62  # the block-per-row kernel (used below 8 rows per SM)
    try:
        bidx, bval = C.topk(S, k, None, None, None)
        same = np.array_equal(bidx.copy_to_host(), idx.copy_to_host()) and np.array_equal(
            bval.copy_to_host(), val.copy_to_host()
        )
        record(
            case,
            "fastrec cuda kernel (block per row)",
            lambda: timed(lambda: C.topk(S, k, None, None, None)),
            gbs,
            verdict(same, "identical to the warp kernel"),
        )
    finally:
        C_topk._WARP_TOPK_MIN_ROWS = old_min_rows
    record(case, "fastrec.topk(device scores)", lambda: timed(lambda: fastrec.topk(S, k)), gbs)
    if torch is None:
        return skip(case, "torch.topk", TORCH_WHY)
    St = torch.as_tensor(S, device="cuda")
    record(case, "fastrec.topk(torch scores)", lambda: timed(lambda: fastrec.topk(St, k)), gbs)
    tv, _ = torch.topk(St, k, dim=1)
    err = max_abs(tv.cpu().numpy(), val.copy_to_host())
    record(
        case,
        "torch.topk",
        lambda: timed(lambda: torch.topk(St, k, dim=1)),
        gbs,
        verdict(err == 0, f"values max|diff| {err:.1e} vs fastrec"),
    )


@functools.cache
def _item_users(size):
    """Items x users CSR (float32, int32 indices) of a datasets.py size: rows are the vectors."""
    ui = datasets.generate(*SIZES[size])
    iu = ui.T.tocsr()
    iu.sort_indices()
    return ui, iu


def _to_device_csr(m):
    return cuda.to_device(m.indptr), cuda.to_device(m.indices), cuda.to_device(m.data)


def case_cosine_topk():
    case = "cosine top-k large 27k items x 138k users x 20M, k=100"
    k = 100
    # Correctness on the small set against the CPU reference (and the compile warm-up).
    _, small = _item_users("small")
    got = C.cosine_topk(
        small.indptr, small.indices, small.data, small.shape[1], k, 0.0, 0.0, 1, False, None
    )
    got = sp.csr_matrix((got[2], got[1], got[0]), shape=(small.shape[0],) * 2)
    want = fastrec.cosine_topk(small, k, backend="numpy")
    from comparators import assert_csr_topk_equal

    try:
        assert_csr_topk_equal(got, want, k)
        check = "ok vs numpy on the small set (2k items)"
    except AssertionError as exc:
        check = f"MISMATCH vs numpy on small: {str(exc)[:100]}"
    ui, iu = _item_users("large")
    n_items, n_users = iu.shape
    W = datasets.work(ui)
    d_indptr, d_indices, d_data = _to_device_csr(iu)
    result = {}

    def run():
        result["r"] = C.cosine_topk(
            d_indptr, d_indices, d_data, n_users, k, 0.0, 0.0, 1, False, None
        )

    rate = lambda s: f"{W / s / 1e9:.0f} G multiply-adds/s"  # noqa: E731
    t_fast = record(
        case,
        "fastrec cuda (exact fp32, sparse, O(nnz + n*k))",
        lambda: timed(run, reps=3),
        rate,
        check,
    )
    if torch is None:
        return skip(case, "torch dense GEMM + topk", TORCH_WHY)
    # The dense approach: normalised items x users dense (15 GB), blocks of S = Xn_b @ Xn.T.
    crow = torch.as_tensor(iu.indptr.astype(np.int64), device="cuda")
    col = torch.as_tensor(iu.indices.astype(np.int64), device="cuda")
    vals = torch.as_tensor(iu.data, device="cuda")
    Xn = torch.sparse_csr_tensor(crow, col, vals, size=iu.shape).to_dense()
    Xn /= torch.linalg.vector_norm(Xn, dim=1, keepdim=True).clamp_min(1e-30)
    block = 2048

    def dense_topk():
        out_v, out_i = [], []
        for r0 in range(0, n_items, block):
            S = Xn[r0 : r0 + block] @ Xn.T  # noqa: F821 (deleted only after the timing)
            rows = torch.arange(S.shape[0], device="cuda")
            S[rows, rows + r0] = -math.inf
            S.masked_fill_(S == 0, -math.inf)
            v, i = torch.topk(S, k, dim=1)
            out_v.append(v)
            out_i.append(i)
        return torch.cat(out_v), torch.cat(out_i)

    for label, tf32 in (("fp32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            check = ""
            if not tf32 and t_fast is not None:  # compare the first items, tie-tolerant
                tv, ti = dense_topk()
                r_indptr, r_idx, r_val = (x.copy_to_host() for x in result["r"])
                c = SIZES["cos_check"]
                mine = sp.csr_matrix((r_val, r_idx, r_indptr), shape=(n_items, n_items))[:c]
                from comparators import csr_rows_as_topk

                tvv = tv[:c].cpu().numpy()
                tii = np.where(np.isfinite(tvv), ti[:c].cpu().numpy(), -1)
                try:
                    assert_topk_equal(csr_rows_as_topk(mine, k), (tii, tvv), rtol=1e-4, atol=1e-5)
                    check = f"ok fastrec vs torch fp32 ({c} items, tie-tolerant)"
                except AssertionError as exc:
                    check = f"MISMATCH fastrec vs torch fp32: {str(exc)[:100]}; " + _arbitrate(
                        iu, mine, (tii, tvv), k, c
                    )
            record(
                case,
                f"torch dense GEMM {label} + topk",
                lambda: timed(dense_topk, reps=3),
                rate,
                check,
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    del Xn


def _arbitrate(iu, mine, theirs, k, c):
    """Which of two disagreeing cosine top-k results the float64 reference agrees with, on
    the first ``c`` rows (the CPU reference on those rows only)."""
    from comparators import csr_rows_as_topk

    try:
        ref = fastrec.cosine_topk(iu.astype(np.float64), k, rows=np.arange(c), backend="numpy")
        ref = csr_rows_as_topk(ref[:c], k)
        verdicts = []
        for name, got in (("fastrec", csr_rows_as_topk(mine, k)), ("torch", theirs)):
            try:
                assert_topk_equal(got, ref, rtol=1e-5, atol=1e-6)
                verdicts.append(f"{name} agrees with the fp64 reference")
            except AssertionError as exc:
                verdicts.append(f"{name} differs from the fp64 reference ({str(exc)[:60]})")
        return "; ".join(verdicts)
    except Exception as exc:
        return f"arbitration failed: {type(exc).__name__}: {str(exc)[:80]}"


def case_recommend():
    case = f"recommend {SIZES['rec_users']} users, large, n=10"
    n = 10
    ui, iu = _item_users("large")
    ui = ui.tocsr()
    ui.sort_indices()
    nb = C.cosine_topk(iu.indptr, iu.indices, iu.data, iu.shape[1], 100, 0.0, 0.0, 1, False, None)
    NB = sp.csr_matrix((nb[2], nb[1], nb[0]), shape=(iu.shape[0],) * 2)
    NB.sort_indices()
    rows = np.arange(min(SIZES["rec_users"], ui.shape[0]), dtype=np.int64)
    d_ui, d_nb = _to_device_csr(ui), _to_device_csr(NB)
    d_rows = cuda.to_device(rows)

    def f():
        return C.recommend(*d_ui, *d_nb, NB.shape[0], d_rows, n, d_ui[0], d_ui[1], None, None, None)

    idx, val = f()
    sync()
    m = min(64, len(rows))
    want = fastrec.recommend(ui, NB, n, user_ids=rows[:m], backend="numpy")
    try:
        assert_topk_equal((idx[:m].copy_to_host(), val[:m].copy_to_host()), want)
        check = f"ok vs numpy ({m} users)"
    except AssertionError as exc:
        check = f"MISMATCH vs numpy: {str(exc)[:120]}"
    record(
        case,
        "fastrec cuda (fused sparse, no dense scores)",
        lambda: timed(f),
        lambda s: f"{len(rows) / s / 1e6:.2f} M users/s",
        check,
    )


def case_dot_topk():
    """Embedding retrieval at the shapes of issue 15's table: all users, 64 float32 factors,
    top-10 with each user's seen items (the "mid" pattern) excluded. torch has no per-row
    exclusion in topk: it gets blocked torch.matmul, the seen positions of the block set to
    -inf by index_put_ (coordinates precomputed on the device), then torch.topk; a second torch
    row skips the exclusion (matmul + topk only)."""
    n_users, n_factors, k = SIZES["emb_users"], SIZES["emb_factors"], 10
    Q = device_uniform((n_users, n_factors), seed=21, lo=-0.1, hi=0.1)
    for n_items in SIZES["emb_items"]:
        case = f"dot_topk {n_users} x {n_items}, {n_factors} fp32 factors, k={k}, seen excluded"
        X = device_uniform((n_items, n_factors), seed=22, lo=-0.1, hi=0.1)
        nnz = datasets.SIZES["mid"][2] * SIZES["emb_users"] // datasets.SIZES["mid"][0]
        seen = datasets.generate(n_users, n_items, nnz, seed=3)
        seen.sort_indices()
        ex = (
            cuda.to_device(seen.indptr.astype(np.int64)),
            cuda.to_device(seen.indices.astype(np.int64)),
        )
        f = lambda: C.dot_topk(Q, X, k, None, None, ex[0], ex[1], None)  # noqa: E731
        idx, val = f()
        sync()
        m = min(256, n_users)
        want = fastrec.dot_topk(
            Q[:m].copy_to_host(), X.copy_to_host(), k, exclude=seen[:m], backend="numpy"
        )
        try:
            assert_topk_equal(
                (idx[:m].copy_to_host(), val[:m].copy_to_host()), want, rtol=1e-5, atol=1e-6
            )
            check = f"ok vs numpy ({m} users, scores within 1e-5)"
        except AssertionError as exc:
            check = f"MISMATCH vs numpy: {str(exc)[:120]}"
        rate = lambda s: f"{n_users / s / 1e6:.2f} M users/s"  # noqa: E731
        record(case, "fastrec cuda dot_topk (fused, seen excluded)", lambda: timed(f), rate, check)
        g = lambda: C.dot_topk(Q, X, k, None, None, None, None, None)  # noqa: E731
        record(case, "fastrec cuda dot_topk (no exclusion)", lambda: timed(g), rate)
        for regs in (128, 96):  # ptxas's register cap: 2 blocks per SM instead of 1
            C_embedding._MAX_REGISTERS = regs
            try:
                vidx, vval = f()
                same = np.array_equal(vidx.copy_to_host(), idx.copy_to_host()) and np.array_equal(
                    vval.copy_to_host(), val.copy_to_host()
                )
                record(
                    case,
                    f"  variant: registers capped at {regs}",
                    lambda: timed(f),
                    rate,
                    verdict(same, "identical"),
                )
            finally:
                C_embedding._MAX_REGISTERS = None
        record(
            case,
            "fastrec.dot_topk(device arrays, host mask)",
            lambda: timed(lambda: fastrec.dot_topk(Q, X, k, exclude=seen)),
            rate,
        )
        if torch is None:
            skip(case, "torch.matmul + torch.topk", TORCH_WHY)
            continue
        Qt = torch.as_tensor(Q, device="cuda")
        Xt = torch.as_tensor(X, device="cuda")
        rows_t = torch.as_tensor(np.repeat(np.arange(n_users), np.diff(seen.indptr)), device="cuda")
        cols_t = torch.as_tensor(seen.indices.astype(np.int64), device="cuda")
        block = SIZES["emb_block"]
        starts = np.searchsorted(
            np.repeat(np.arange(n_users), np.diff(seen.indptr)),
            np.arange(0, n_users + block, block),
        )

        def torch_topk(exclude):
            out_v, out_i = [], []
            for b, r0 in enumerate(range(0, n_users, block)):
                S = torch.matmul(Qt[r0 : r0 + block], Xt.T)
                if exclude:
                    lo, hi = int(starts[b]), int(starts[b + 1])
                    S.index_put_(
                        (rows_t[lo:hi] - r0, cols_t[lo:hi]), torch.tensor(-math.inf, device="cuda")
                    )
                v, i = torch.topk(S, k, dim=1)
                out_v.append(v)
                out_i.append(i)
            return torch.cat(out_v), torch.cat(out_i)

        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # full fp32 products, as fastrec's
        try:
            tv, _ = torch_topk(True)
            err = max_abs(tv.cpu().numpy(), val.copy_to_host())
            record(
                case,
                f"torch.matmul + index_put_(-inf) + torch.topk ({block}-row blocks)",
                lambda: timed(lambda: torch_topk(True)),
                rate,
                verdict(err <= 1e-5, f"values max|diff| {err:.1e} vs fastrec"),
            )
            record(
                case,
                "torch.matmul + torch.topk (no exclusion)",
                lambda: timed(lambda: torch_topk(False)),
                rate,
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        Qt = Xt = rows_t = cols_t = None  # free the device copies before the next case
        free()


CASES = {
    "sigmoid_dense": case_sigmoid_dense,
    "sigmoid_csr": case_sigmoid_csr,
    "logistic_loss_grad": case_logistic_loss_grad,
    "logistic_csr": case_logistic_csr,
    "topk": case_topk,
    "cosine_topk": case_cosine_topk,
    "recommend": case_recommend,
    "dot_topk": case_dot_topk,
}


def print_table():
    base = {}
    for case, impl, seconds, _, _ in ROWS:  # the first fastrec row of each case
        if impl.startswith("fastrec") and seconds is not None:
            base.setdefault(case, seconds)
    head = ("case", "implementation", "time ms", "throughput", "vs fastrec", "check")
    lines = []
    for case, impl, seconds, metric, check in ROWS:
        t = f"{seconds * 1e3:.2f}" if seconds is not None else "-"
        ratio = "-"
        if seconds is not None and case in base:
            ratio = f"{seconds / base[case]:.2f}x"
        lines.append((case, impl, t, metric, ratio, check))
    widths = [max(len(str(r[i])) for r in lines + [head]) for i in range(5)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    print()
    print(fmt.format(*head))
    for row in lines:
        print(fmt.format(*row))
    print(
        "\n'vs fastrec' = this row's time / the case's first fastrec row's time (the raw "
        "kernel; above 1: that kernel is faster)."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny sizes, simulator allowed: checks the script, times nothing real",
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        global CASE_SECONDS
        SIZES.update(TINY)
        CASE_SECONDS = 0.1
    import numba

    ok, why = C.is_available()
    print(f"device: {C.device_description() if ok else 'none (' + why + ')'}")
    versions = f"numpy {np.__version__}, numba {numba.__version__}"
    try:
        from importlib.metadata import version

        versions += f", numba-cuda {version('numba-cuda')}"
    except Exception:
        pass
    versions += f", torch {torch.__version__}" if torch is not None else ", torch: none"
    versions += f", cupy {cp.__version__}" if cp is not None else ", cupy: none"
    print(versions)
    if not ok or (C._SIM and not args.dry_run):
        print(f"no GPU in use ({why or 'simulator'}): this script is meant for a GPU machine")
        return 1
    start = time.perf_counter()
    for name in args.cases:
        t0 = time.perf_counter()
        print(f"-- {name}", flush=True)
        try:
            CASES[name]()
        except Exception as exc:
            ROWS.append(
                (name, "(setup)", None, "", f"ERROR {type(exc).__name__}: {str(exc)[:160]}")
            )
            traceback.print_exc()
        free()
        print(f"   {time.perf_counter() - t0:.1f} s", flush=True)
    print_table()
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
