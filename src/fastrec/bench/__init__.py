"""``fastrec bench``: the shipped benchmark cases, timed against the installed peers in one run,
written as one Markdown report (ratios measured in the same run) plus PNG charts.

Each case is built, timed and dropped before the next (memory: one case's arrays at a time).
Within a case the implementations are timed in interleaved rounds (one call of each per round,
after one warm-up call each), so machine load drifts over all of them alike; medians are
reported. Ratios: ``speed-up`` = the baseline's median / this median (the baseline is the peer
named in the case, > 1 is faster); ``of read floor`` = the floor's median / this median, where
the floor is a parallel read of the same arrays on the same thread count (1.0 = as fast as
reading them; the report's header says whether the memory or the cores set that speed). The
pytest-benchmark suites in the source tree's benchmarks/ stay the developers' tool.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..kernels.form_choice import cpu_description
from ._floor import memory_state, read_scaling
from .cases import CASES, SIZES, peer_versions

SLOW_CALL_S = 2.0  # an implementation whose warm-up call takes longer is timed once more only


@dataclass
class Row:
    case: str
    impl: str
    median_s: float
    speedup: float | None
    of_floor: float | None


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(case, rounds: int, progress=None) -> list[Row]:
    """Time every implementation of ``case`` (and its floor) in interleaved rounds."""
    impls = dict(case.impls)
    if case.floor is not None:
        impls["read floor"] = case.floor
    warm = {name: _time(fn) for name, fn in impls.items()}  # compiles, fills caches
    n_rounds = {name: rounds if warm[name] < SLOW_CALL_S else 1 for name in impls}
    times = {name: [] for name in impls}
    for r in range(rounds):
        for name, fn in impls.items():
            if r < n_rounds[name]:
                times[name].append(_time(fn))
        if progress is not None:
            progress.update(1)
    med = {name: float(np.median(ts)) for name, ts in times.items()}
    base = med.get(case.baseline)
    floor = med.get("read floor")
    rows = []
    for name in impls:
        rows.append(
            Row(
                case.title,
                name,
                med[name],
                None if base is None or name == "read floor" else base / med[name],
                None if floor is None or name == "read floor" else floor / med[name],
            )
        )
    return rows


def header(size: str, n_threads: int, scaling: float | None = None) -> list[str]:
    """The report's first lines: CPU, thread count, load, versions, date; with ``scaling``
    (the n-thread read over the 1-thread read, :func:`read_scaling`), what sets the floor."""
    import numba
    import scipy

    from .._version import __version__

    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "unknown"
    peers = ", ".join(
        f"{k} {v}" if v else f"{k}: not installed" for k, v in peer_versions().items()
    )
    return [
        f"# fastrec bench, size {size}",
        "",
        f"- CPU: {cpu_description()}, {os.cpu_count()} logical CPUs",
        f"- threads: {n_threads} (every implementation and the read floor); "
        f"1-minute load average at start: {load}",
        f"- fastrec {__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"numba {numba.__version__}; peers: {peers}",
        f"- {datetime.datetime.now().isoformat(timespec='seconds')}, Python "
        f"{platform.python_version()}, {platform.platform()}",
        *([f"- memory: {memory_state(n_threads, scaling)}"] if scaling is not None else []),
        "",
        "speed-up = the case's baseline median / this median (> 1 is faster); of read floor = "
        "a parallel read of the same arrays, same threads, same run / this median (1.0 = "
        "as fast as reading them).",
    ]


def markdown(
    rows: list[Row], baselines: dict[str, str], notes: dict[str, list[str]], head: list[str]
) -> str:
    lines = [
        *head,
        "",
        "| case | implementation | median ms | speed-up | of read floor |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        speed = "-" if r.speedup is None else f"{r.speedup:.2f}x"
        floor = "-" if r.of_floor is None else f"{r.of_floor:.2f}"
        lines.append(f"| {r.case} | {r.impl} | {r.median_s * 1e3:.2f} | {speed} | {floor} |")
    lines.append("")
    for case, base in baselines.items():
        extra = "; ".join(notes.get(case) or [])
        lines.append(f"- {case}: speed-up against {base}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines) + "\n"


def run(
    size: str = "small",
    n_threads: int | None = None,
    select: str | None = None,
    out_dir=None,
    rounds: int | None = None,
    show_progress: bool = True,
) -> Path:
    """Run the cases (those whose name contains ``select``) and write ``report.md`` (and
    ``speedup.png`` when matplotlib is installed) into ``out_dir``; returns the report path."""
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from .._validation import check_n_threads

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    n_threads = check_n_threads(n_threads)
    names = [name for name in CASES if select is None or select in name]
    if not names:
        raise ValueError(f"no benchmark case matches {select!r}; cases: {', '.join(CASES)}")
    rounds = rounds or {"tiny": 1, "small": 3}.get(size, 5)
    out_dir = Path(out_dir or "fastrec-bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A small VM's memory can run from its own bottleneck to each core's peak within minutes;
    # the floor's ratios mean different things in the two states, so the report says which.
    head = header(size, n_threads, read_scaling(n_threads) if n_threads > 1 else None)
    rows, baselines, notes = [], {}, {}
    with (
        tqdm(
            total=len(names) * rounds, desc="fastrec bench", unit="round", disable=not show_progress
        ) as progress,
        threadpool_limits(limits=n_threads),
    ):
        for name in names:
            progress.set_postfix_str(name)
            case = CASES[name](SIZES[size], n_threads)
            rows += run_case(case, rounds, progress)
            baselines[case.title] = case.baseline
            notes[case.title] = case.notes
            del case
    report = out_dir / "report.md"
    text = markdown(rows, baselines, notes, head)
    try:
        from ._plot import speedup_chart

        chart = speedup_chart(
            rows, out_dir / "speedup.png", head[2].removeprefix("- CPU: "), n_threads
        )
        text += f"\n![speed-ups]({chart.name})\n"
    except ImportError:
        text += "\nCharts: not drawn (pip install 'fastrec[plot]' for matplotlib).\n"
    report.write_text(text)
    return report
