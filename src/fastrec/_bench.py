"""``fastrec bench``: run the pytest-benchmark suites and turn their JSON into a ratio table.

A benchmark's backend is its ``backend`` parameter (or ``impl`` / ``library``; a benchmark of
the ``reference`` group without one is the NumPy reference). Rows are compared within the
same test name and the same other parameters; the ratio is baseline median / row median
(> 1 means faster than the NumPy reference, or than the named library when ``--baseline``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BACKEND_PARAMS = ("backend", "impl", "library")
REFERENCE_NAMES = ("numpy", "reference")


def find_benchmarks(path=None) -> Path:
    """The benchmarks/ folder: ``path``, else ./benchmarks, else the source tree's."""
    candidates = (
        [Path(path)]
        if path is not None
        else [
            Path.cwd() / "benchmarks",
            Path(__file__).resolve().parents[2] / "benchmarks",
        ]
    )
    for c in candidates:
        if c.is_dir() and any(c.glob("test_*.py")):
            return c
    where = candidates[0] if path is not None else "./benchmarks"
    raise FileNotFoundError(
        f"no benchmark suite at {where}: run from the fastrec source tree or pass --path"
    )


def run_suite(bench_dir: Path, json_path: Path, select: str | None = None) -> int:
    """Run pytest-benchmark on ``bench_dir`` writing ``json_path``; returns pytest's exit code."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(bench_dir),
        "--benchmark-only",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,min,max,rounds",
    ]
    if select:
        cmd += ["-k", select]
    return subprocess.call(cmd, cwd=bench_dir.parent)


def _base_name(name: str) -> str:
    return re.sub(r"\[.*\]$", "", name)


def ratio_rows(report: dict, baseline: str | None = None) -> list[dict]:
    """One row per benchmark: test, case (other params), backend, median s, ratio to baseline."""
    rows = []
    for b in report.get("benchmarks", []):
        params = dict(b.get("params") or {})
        backend = next((str(params.pop(p)) for p in BACKEND_PARAMS if p in params), None)
        if backend is None:
            backend = "numpy" if b.get("group") == "reference" else "-"
        test = _base_name(b.get("name", "?"))
        case = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        rows.append(
            {
                "test": test,
                "case": case,
                "backend": backend,
                "median": float(b["stats"]["median"]),
                "ratio": None,
            }
        )
    names = (baseline,) if baseline else REFERENCE_NAMES
    for row in rows:
        base = [
            r
            for r in rows
            if r["test"] == row["test"] and r["case"] == row["case"] and r["backend"] in names
        ]
        if base:
            row["ratio"] = base[0]["median"] / row["median"] if row["median"] > 0 else None
    rows.sort(key=lambda r: (r["test"], r["case"], -(r["ratio"] or 0.0)))
    return rows


def load_report(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such benchmark report: {path}")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a pytest-benchmark JSON report ({exc})") from None
    if not isinstance(report, dict) or "benchmarks" not in report:
        raise ValueError(f"{path} is not a pytest-benchmark JSON report (no 'benchmarks')")
    return report
