"""The backend contract: every backend exports its kernels under the reference's names with the
reference's signatures, and every kernel that ``AUTO_ORDER`` ranks a backend for exists there.

Import-level checks only (no kernel runs), so they hold for a backend that cannot run here too
(the CUDA module imports without a GPU).
"""

import importlib
import inspect

import pytest

from fastrec import _dispatch
from fastrec.kernels import reference

# Names a backend module may export besides kernels: availability, "auto" and OpenMP probes,
# and the CUDA backend's device-array helpers (``device_*``, ``Device*``, ``is_device_array``).
NOT_KERNELS = {
    "is_available",
    "auto_pass",
    "openmp_enabled",
    "openmp_max_threads",
    "is_device_array",
}
NOT_KERNEL_PREFIXES = ("device_", "Device")
# The kernels: every name AUTO_ORDER ranks, and the prepare/rows forms that fastrec.dask uses.
KERNELS = set(_dispatch.AUTO_ORDER) | {
    name
    for name, fn in vars(reference).items()
    if inspect.isfunction(fn) and name.endswith(("_prepare", "_rows")) and name[0] != "_"
}
COMPILED = [b for b in _dispatch.BACKENDS if b != "numpy"]


def _module(backend):
    try:
        return importlib.import_module(_dispatch._MODULES[backend])
    except ImportError as exc:  # e.g. numba-cuda not installed: nothing to check
        pytest.skip(f"{backend} does not import here: {exc}")


def _exports(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if n[0] != "_" and callable(v)]
    return {n for n in names if n[0] != "_" and not n.startswith(NOT_KERNEL_PREFIXES)} - NOT_KERNELS


def _shape(fn):
    """Parameter names, kinds and defaults: what a caller relies on (not annotations)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_ranked_kernel_is_a_reference_function():
    for kernel in KERNELS:
        assert inspect.isfunction(getattr(reference, kernel, None)), kernel


@pytest.mark.parametrize("backend", COMPILED)
def test_exports_are_reference_kernels_with_reference_signatures(backend):
    module = _module(backend)
    exports = _exports(module)
    assert exports, f"{backend} exports no kernels"
    assert exports <= KERNELS, f"{backend} exports non-kernels: {sorted(exports - KERNELS)}"
    for name in sorted(exports):
        assert _shape(getattr(module, name)) == _shape(getattr(reference, name)), (
            f"{backend}.{name}{inspect.signature(getattr(module, name))} differs from "
            f"reference.{name}{inspect.signature(getattr(reference, name))}"
        )


@pytest.mark.parametrize("backend", COMPILED)
def test_auto_order_only_ranks_kernels_a_backend_has(backend):
    module = _module(backend)
    for kernel, order in _dispatch.AUTO_ORDER.items():
        if backend in order:
            assert callable(getattr(module, kernel, None)), (
                f"AUTO_ORDER[{kernel!r}] names {backend}"
            )


def test_auto_order_ends_with_the_reference():
    for kernel, order in _dispatch.AUTO_ORDER.items():
        assert order[-1] == "numpy", kernel
        assert len(set(order)) == len(order) and set(order) <= set(_dispatch.BACKENDS), kernel
