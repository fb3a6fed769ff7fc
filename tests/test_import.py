"""`import fastrec` stays light: heavy dependencies load when first needed, not at import.

Checked by what a fresh interpreter has in sys.modules (timing is measured by
benchmarks/bench_import.py, never asserted in a test).
"""

import json
import subprocess
import sys

import pytest

HEAVY = (
    "scipy.stats",
    "scipy.optimize",
    "pandas",
    "dask",
    "numba",
    "polars",
    "pyarrow",
    "typer",
    "rich",
    "tqdm",
    "sklearn",
)


def loaded_after(statement: str) -> list:
    code = f"import sys\n{statement}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def heavy_in(modules) -> list:
    return [
        m
        for m in modules
        if m.split(".")[0] in HEAVY or m.startswith(HEAVY) or m.startswith("fastrec.kernels")
    ]


def test_import_fastrec_loads_no_scipy_and_no_backend():
    mods = loaded_after("import fastrec")
    assert heavy_in(mods) == []
    assert not [m for m in mods if m == "scipy" or m.startswith("scipy.")]


def test_recommender_layer_loads_no_stats_optimize_tables_or_backend():
    mods = loaded_after("import fastrec.data, fastrec.metrics, fastrec.models, fastrec.features")
    assert heavy_in(mods) == []


def test_kernel_backend_loads_on_first_call_only():
    mods = loaded_after(
        "import numpy as np, fastrec\nfastrec.topk(np.ones((2, 3)), 1, backend='numpy')"
    )
    assert "fastrec.kernels.reference" in mods
    assert "numba" not in mods and "fastrec.kernels.cython" not in mods


@pytest.mark.parametrize("name", ["fastrec", "fastrec.data", "fastrec.features", "fastrec.metrics"])
def test_namespace_shows_public_names_only(name):
    mod = __import__(name, fromlist=["_"])
    shown = dir(mod)
    assert set(mod.__all__) <= set(shown)
    for leaked in ("np", "sp", "csv", "Path", "dataclass", "annotations", "importlib"):
        assert leaked not in shown
    assert not [n for n in shown if n.startswith("_") and n != "__version__"]


def test_lazy_submodules_are_attributes():
    import fastrec

    assert fastrec.data.from_dataframe and fastrec.metrics.roc_auc
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fastrec.nope  # noqa: B018
