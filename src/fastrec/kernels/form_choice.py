"""Which exact form of a kernel runs on this CPU: measured on first use, cached per CPU model.

Two kernels have two exact forms whose speed depends on the microarchitecture (vector gathers
and compress stores are fast on Zen 5, slow on Zen 4, absent without AVX-512):

- ``csr_dot`` (Numba CSR scoring, loss/gradient, Hessian products): "gather" (LLVM vectorises
  the gathers of w) or "scalar" (four interleaved scalar accumulators). They round
  differently (another summation order, last-bit differences in the float64 logit); each is
  fixed, so results never depend on the thread count, but they can differ between CPUs that
  chose differently.
- ``csr_dot_cython`` (Cython CSR scoring): "gather" (the widest of AVX-512 and AVX2 vector
  gathers this CPU runs, kernels/_cython/_scoring_simd.h) or "scalar" (four accumulators). They
  round differently, as the Numba forms do.
- ``topk_float32_numba`` / ``topk_float32_cython`` (float32 top-k rows with k >= 32):
  "compress" (vector compress; Cython's needs AVX-512) or "walk" (bit-mask walk). Identical
  results.

On first use each choice is a short measurement (a few tens of ms: both forms on the same
small input, interleaved, medians), stored in ``$XDG_CACHE_HOME/fastrec/forms-<version>.json``
(default ``~/.cache``) under the CPU's model name, family, model and the CPU Numba compiles for
(so ``NUMBA_CPU_NAME=haswell`` masking AVX-512 is a CPU of its own). The environment variable
``FASTREC_FORMS`` (e.g. ``csr_dot=scalar,topk_float32_numba=walk``) overrides; ``fastrec info``
shows what was chosen and why.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

FORMS = {
    "csr_dot": ("gather", "scalar"),
    "csr_dot_cython": ("gather", "scalar"),
    "topk_float32_numba": ("compress", "walk"),
    "topk_float32_cython": ("compress", "walk"),
}
_chosen: dict[str, tuple[str, str]] = {}
_lock = threading.RLock()


def cpu_description() -> str:
    """'model name (family F, model M)' from /proc/cpuinfo, or what platform knows."""
    import platform

    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        return f"{name} (family {info['cpu family']}, model {info.get('model', '?')})"
    return name


def cpu_key() -> str:
    """The CPU the cache entry belongs to: model name, family, model, Numba's target CPU."""
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        target = config.CPU_NAME or llvm.get_host_cpu_name()
    except Exception:  # a key without Numba's target is still a key
        target = "?"
    return f"{cpu_description()} / numba target {target}"


def cache_path() -> Path:
    from .._version import __version__

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastrec" / f"forms-{__version__}.json"


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, kind: str, form: str, why: str) -> None:
    """Best effort (a read-only home only means measuring again next process)."""
    path = cache_path()
    try:
        data = _read_cache()
        data.setdefault(key, {})[kind] = {"form": form, "why": why}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def _override(kind: str) -> str | None:
    for item in os.environ.get("FASTREC_FORMS", "").split(","):
        name, _, form = item.partition("=")
        if name.strip() == kind and form.strip():
            form = form.strip()
            if form not in FORMS[kind]:
                raise ValueError(
                    f"FASTREC_FORMS: {kind} must be one of {FORMS[kind]}, got {form!r}"
                )
            return form
    return None


def _measure(runs: dict, rounds: int = 5) -> tuple[str, str]:
    """(fastest form, why) from interleaved rounds of each form's run (one warm-up each); the
    best round of each counts, as other processes' load only ever adds time."""
    for fn in runs.values():
        fn()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.min(t)) for name, t in times.items()}
    best = min(med, key=med.get)
    detail = ", ".join(f"{name} {med[name] * 1e3:.2f} ms" for name in runs)
    detail += f" (best of {rounds})"
    return best, f"measured on this CPU: {detail}"


def _choose(kind: str, runs_factory) -> str:
    if kind in _chosen:
        return _chosen[kind][0]
    with _lock:
        if kind in _chosen:
            return _chosen[kind][0]
        form = _override(kind)
        if form is not None:
            _chosen[kind] = (form, "FASTREC_FORMS")
            return form
        key = cpu_key()
        cached = _read_cache().get(key, {}).get(kind)
        if cached and cached.get("form") in FORMS[kind]:
            _chosen[kind] = (cached["form"], f"cached ({cached.get('why', '')})")
            return cached["form"]
        runs = runs_factory()
        if len(runs) == 1 or None in runs.values():
            form, why = next(iter(runs)), "the only form this CPU can run"
        else:
            form, why = _measure(runs)
        _chosen[kind] = (form, why)
        _write_cache(key, kind, form, why)
        return form


def _csr_dot_runs():
    from .numba_cpu import scoring

    rng = np.random.default_rng(0)
    # 65536 rows of 40 (20 MB streamed) into a w of 4 MB: gathers that miss L2, as in use.
    n_rows, per_row, n_cols = 65536, 40, 1 << 20
    indices = rng.integers(0, n_cols, n_rows * per_row).astype(np.uint32)
    indptr = np.arange(0, n_rows * per_row + 1, per_row).astype(np.uint32)
    data = rng.random(n_rows * per_row, dtype=np.float32)
    w = rng.standard_normal(n_cols).astype(np.float32)
    out = np.empty(n_rows, dtype=np.float32)

    def run(gather):
        return lambda: scoring._sigmoid_csr(indptr, indices, data, w, 0.0, out, True, gather)

    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(1)  # the per-core cost decides; restored by the caller's pool

    try:
        runs = {"gather": run(True), "scalar": run(False)}
        for fn in runs.values():
            fn()  # compile both here, under one thread
    finally:
        numba.set_num_threads(saved)

    def one_thread(fn):
        def wrapped():
            saved_ = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                fn()
            finally:
                numba.set_num_threads(saved_)

        return wrapped

    return {name: one_thread(fn) for name, fn in runs.items()}


def csr_dot_form() -> str:
    """ "gather" or "scalar": the Numba CSR dot product's form on this CPU."""
    if "csr_dot" in _chosen:  # the per-call fast path
        return _chosen["csr_dot"][0]
    return _choose("csr_dot", _csr_dot_runs)


def _csr_dot_cython_runs():
    from ._cython import _scoring

    gather_isa = _scoring._csr_isa_available()
    if not gather_isa:
        return {"scalar": None}
    rng = np.random.default_rng(0)
    n_rows, per_row, n_cols = 65536, 40, 1 << 20  # as _csr_dot_runs
    indices = rng.integers(0, n_cols, n_rows * per_row).astype(np.int32)
    indptr = np.arange(0, n_rows * per_row + 1, per_row).astype(np.int32)
    data = rng.random(n_rows * per_row, dtype=np.float32)
    w = rng.standard_normal(n_cols).astype(np.float32)
    out = np.empty(n_rows, dtype=np.float32)

    def run(isa):  # one thread: the per-core cost decides
        return lambda: _scoring._sigmoid_csr(indptr, indices, data, w, 0.0, out, 1, isa)

    return {"gather": run(gather_isa), "scalar": run(0)}


def apply_csr_dot_form_cython() -> str:
    """Choose (once) and switch on the Cython CSR sigmoid's dot product form: "gather" (the
    widest vector gathers this CPU runs) or "scalar"."""
    from ._cython import _scoring

    form = _choose("csr_dot_cython", _csr_dot_cython_runs)
    if _applied.get("csr_dot_cython") != form:
        _scoring._set_csr_isa(_scoring._csr_isa_available() if form == "gather" else 0)
        _applied["csr_dot_cython"] = form
    return form


def _topk_runs(backend):
    """The calibration runs (built only when a choice is to be measured: 20 MB of scores)."""
    from . import topk_forms

    if not topk_forms.compress_available(backend):
        return {"walk": None}
    rng = np.random.default_rng(0)
    scores = rng.random((256, 20_000), dtype=np.float32)  # 20 MB: streamed, as in use
    if backend == "numba":
        numba_topk = importlib.import_module(".numba_cpu.topk", __package__)

        def run(compress):
            def go():
                saved = numba_topk._COMPRESS
                numba_topk._COMPRESS = compress
                try:
                    numba_topk.topk(scores, 100, None, None, 1)
                finally:
                    numba_topk._COMPRESS = saved

            return go
    else:
        from ._cython import _topk
        from .cython import topk as kernel

        def run(compress):
            def go():
                saved = _topk._set_compress(compress, 32)
                try:
                    kernel(scores, 100, None, None, 1)
                finally:
                    _topk._set_compress(*saved)

            return go

    return {"compress": run(True), "walk": run(False)}


def apply_topk_form(backend: str) -> str:
    """Choose (once) and switch on ``backend``'s float32 top-k row form for k >= 32:
    "compress" or "walk". ``backend`` is "numba" or "cython". Called per topk call: once the
    choice is applied it costs a dictionary lookup."""
    applied = _applied.get(backend)
    if applied is not None:
        return applied
    form = _choose(f"topk_float32_{backend}", lambda: _topk_runs(backend))
    if _applied.get(backend) != form:
        if backend == "numba":
            numba_topk = importlib.import_module(".numba_cpu.topk", __package__)

            numba_topk._COMPRESS = form == "compress"
        else:
            from ._cython import _topk

            _topk._set_compress(form == "compress", 32)
        _applied[backend] = form
    return form


_applied: dict[str, str] = {}


def chosen() -> dict[str, tuple[str, str]]:
    """Each form chosen so far in this process: kind -> (form, why)."""
    return dict(_chosen)
