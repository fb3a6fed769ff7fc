"""`fastrec bench` as a pip user runs it: the cases ship inside the package, no source tree."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import fastrec
from fastrec.bench import Row, markdown
from fastrec.bench.cases import CASES


def test_cases_ship_inside_the_package():
    package = Path(fastrec.__file__).parent
    assert (package / "bench" / "cases.py").is_file()
    assert set(CASES) >= {
        "sigmoid_dense",
        "sigmoid_csr",
        "sigmoid_csr_hashed",
        "topk",
        "cosine_topk",
        "ctr_fit",
    }


def test_bench_runs_outside_the_source_tree(tmp_path):
    # A fresh interpreter in an empty folder: no ./benchmarks, only the importable package.
    env = dict(os.environ)
    src = str(Path(fastrec.__file__).parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastrec.cli",
            "bench",
            "--size",
            "tiny",
            "--threads",
            "2",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (out / "report.md").read_text()
    assert "- CPU: " in report and "threads: 2" in report and "numpy" in report
    for case in (
        "sigmoid_scores dense",
        "sigmoid_scores CSR",
        "topk k=100",
        "cosine_topk",
        "LogisticCTR fit",
    ):
        assert case in report, case
    assert "| read floor |" in report
    assert "- memory: the 2-thread read ran " in report
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "speedup.png").stat().st_size > 1000
    else:
        assert "fastrec[plot]" in report
    assert not (tmp_path / "benchmarks").exists()


def test_report_ratios_are_the_medians_ratios():
    rows = [
        Row("c", "fastrec", 0.5, 2.0, 0.8),
        Row("c", "scipy", 1.0, 1.0, 0.4),
        Row("c", "read floor", 0.4, None, None),
    ]
    text = markdown(rows, {"c": "scipy"}, {"c": []}, ["# head"])
    assert "| c | fastrec | 500.00 | 2.00x | 0.80 |" in text
    assert "| c | read floor | 400.00 | - | - |" in text


def test_memory_state_says_what_sets_the_floor():
    from fastrec.bench._floor import memory_state

    assert "the cores, not the memory" in memory_state(2, 1.9)
    assert "the memory sets the read floor" in memory_state(2, 1.1)
    assert "the memory sets the read floor" in memory_state(16, 5.0)
    assert "1.90x" in memory_state(2, 1.9)


def test_unknown_case_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from fastrec.cli import app

    result = CliRunner().invoke(app, ["bench", "-k", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no benchmark case matches 'nope'" in result.output
