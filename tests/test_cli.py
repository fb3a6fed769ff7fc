"""The command line: `fastrec info` reports version, backends and threads."""
import io
import subprocess
import sys

import fastrec


def test_show_config_lists_every_backend():
    buf = io.StringIO()
    fastrec.show_config(file=buf)
    text = buf.getvalue()
    assert f"fastrec: {fastrec.__version__}" in text
    for name in ("numpy", "cython", "numba", "cuda"):
        assert f"  {name}" in text
    assert "default n_threads:" in text


def test_fastrec_info_command_runs():
    out = subprocess.run([sys.executable, "-m", "fastrec.cli", "info"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "backends:" in out.stdout
