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
    out = subprocess.run(
        [sys.executable, "-m", "fastrec.cli", "info"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "backends:" in out.stdout


def test_version_flag_and_python_dash_m():
    for cmd in (["-m", "fastrec", "--version"], ["-m", "fastrec.cli", "--version"]):
        out = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"fastrec {fastrec.__version__}"


def test_help_is_clean():
    from typer.testing import CliRunner

    from fastrec.cli import app

    runner = CliRunner()
    for args in (
        ["--help"],
        ["info", "--help"],
        ["demo", "--help"],
        ["bench", "--help"],
        ["serve", "--help"],
    ):
        result = runner.invoke(app, args, env={"COLUMNS": "100"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "Usage:" in result.output
        if args == ["--help"]:  # each command's one-line help fits, unabridged
            assert "..." not in result.output.split("Commands:")[1]


def test_info_says_what_auto_picks_per_kernel():
    from fastrec._config import auto_choices
    from fastrec._dispatch import AUTO_ORDER, _load, get_kernel

    choices = auto_choices()
    assert set(choices) == set(AUTO_ORDER)
    for kernel, (pick, why) in choices.items():
        picked = get_kernel(kernel, "auto")
        picked = getattr(picked, "__wrapped__", picked)  # Cython kernels: fork-safe wrapper
        assert getattr(_load(pick), kernel) is picked
        assert why.startswith("order " + " > ".join(AUTO_ORDER[kernel]))
    buf = io.StringIO()
    fastrec.show_config(file=buf)
    assert 'backend="auto" runs' in buf.getvalue()
    for kernel, (pick, _) in choices.items():
        assert any(line.split()[:2] == [kernel, pick] for line in buf.getvalue().splitlines())


def test_info_names_a_backend_passed_over(monkeypatch):
    from fastrec import _config

    real = _config.backend_status
    monkeypatch.setattr(
        _config, "backend_status", lambda name: (False, "test") if name == "cython" else real(name)
    )
    pick, why = _config.auto_choices()["cosine_topk"]
    assert pick != "cython" and "cython unavailable" in why
