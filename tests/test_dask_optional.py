"""Dask is optional: fastrec imports without it, and fastrec.dask says which extra it needs."""

import subprocess
import sys

# Runs in a fresh interpreter where importing dask, distributed or pandas fails, as when the
# extra is not installed (whether or not it is installed here).
_BLOCK = """
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed", "pandas"):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, _Missing())
"""


def _run(code):
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + code], capture_output=True, text=True, timeout=120
    )


def test_fastrec_imports_without_dask():
    proc = _run(
        "import fastrec, fastrec.similarity, fastrec.topk; "
        "assert not any(m.split('.')[0] == 'dask' for m in sys.modules); print('ok')"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_fastrec_dask_names_the_extra_when_dask_is_missing():
    proc = _run("import fastrec.dask")
    assert proc.returncode != 0
    assert "ImportError: fastrec.dask needs the optional 'dask' extra" in proc.stderr
    assert "pip install 'fastrec[dask]'" in proc.stderr
