"""The ``fastrec`` command line."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fastrec: compiled kernels for recommender systems.",
    # Plain click help, as git/pip print it: rich panels mark every flag "<bool>".
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from ._version import __version__

        typer.echo(f"fastrec {__version__}")
        raise typer.Exit()


@app.callback()
def _group(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """fastrec: compiled kernels for recommender systems."""


@app.command(short_help='Version, backends, what "auto" picks per kernel.')
def info() -> None:
    """Show the version, the backends, which one "auto" picks per kernel, and threads."""
    from ._config import show_config

    show_config()


def _fail(message: str) -> None:
    """One clear error line on stderr and exit status 1 (no traceback)."""
    # Plain echo, not rich: rich would wrap a long path over several lines.
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(1)


def _console():
    """A rich console; wide enough for the tables when the output is not a terminal."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 120))


@app.command(short_help="Run the whole pipeline on data, print one table.")
def demo(
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Events file: MovieLens-style, "
        "CSV/TSV with a header, or RecBole .inter (default: the built-in "
        "synthetic data).",
    ),
    user_col: str | None = typer.Option(
        None, "--user-col", help="User id column (default: user, userId, user_id, uid)."
    ),
    item_col: str | None = typer.Option(
        None, "--item-col", help="Item id column (default: item, movieId, item_id, iid)."
    ),
    value_col: str | None = typer.Option(
        None, "--value-col", help="Value column (default: rating, value, score, weight, count)."
    ),
    timestamp_col: str | None = typer.Option(
        None, "--timestamp-col", help="Timestamp column (default: timestamp, time, ts)."
    ),
    explicit: bool | None = typer.Option(
        None,
        "--explicit/--implicit",
        help="Values are "
        "ratings, kept above --threshold / every event is an "
        "interaction (default: explicit when the values look "
        "like 1-10 ratings).",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="With explicit ratings: values above it are interactions (default 3.5).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    backend: str = typer.Option(
        "auto", "--backend", help="Kernel backend: auto, numpy, cython, numba or cuda."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="Threads for the kernels (default: all usable cores)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data and the split."),
    users: int = typer.Option(6000, "--users", help="Users in the synthetic data."),
    items: int = typer.Option(2500, "--items", help="Items in the synthetic data."),
) -> None:
    """Run the whole pipeline (data, split, fit, recommend, evaluate) and print one table."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table
    from threadpoolctl import threadpool_limits

    from . import demo as pipeline
    from ._dispatch import BACKENDS, BackendUnavailableError

    if backend != "auto" and backend not in BACKENDS:
        _fail(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {backend!r}")
    if threads is not None and threads == 0:
        _fail("--threads must not be 0")
    console = _console()
    start = time.perf_counter()
    try:
        # BLAS threads busy-waiting beside the kernels' threads slow everything on few cores.
        with (
            threadpool_limits(limits=1, user_api="blas"),
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<32}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=quiet,
            ) as progress,
        ):
            task = progress.add_task("starting", total=pipeline.N_STAGES)
            stages_started: list[str] = []

            def stage(desc: str) -> None:
                # Each stage's start completes the one before it.
                if stages_started:
                    progress.advance(task)
                stages_started.append(desc)
                progress.update(task, description=desc)

            columns = {
                "user": user_col,
                "item": item_col,
                "value": value_col,
                "timestamp": timestamp_col,
            }
            result = pipeline.run(
                data,
                backend=backend,
                n_threads=threads,
                seed=seed,
                n_users=users,
                n_items=items,
                stage=stage,
                threshold=threshold,
                feedback={None: "auto", True: "explicit", False: "implicit"}[explicit],
                columns={k: v for k, v in columns.items() if v is not None},
            )
    except (FileNotFoundError, ValueError, TypeError, BackendUnavailableError) as exc:
        _fail(str(exc).splitlines()[0])
    except ImportError as exc:
        _fail(f"{exc} (the demo needs fastrec.models.LogisticCTR)")
    total = time.perf_counter() - start
    table = Table(
        title=f"fastrec demo: {result.source}\n{result.how}\n"
        f"{result.n_users} users x {result.n_items} items, "
        f"{result.n_train} train / {result.n_test} held-out interactions, "
        f"{result.n_requests} requests evaluated\nbackend={backend}, "
        f"threads={threads or 'all'}",
        title_justify="left",
        caption="A request is a user, or a (user, context) pair when the data has contexts: "
        "CF models give a user one list, the Hybrid ranks for the context.\n"
        "AUC / log-loss: the Hybrid's CTR re-ranker on the candidates of "
        f"{result.n_ctr_requests} of the {result.n_requests} requests.",
        caption_justify="left",
    )
    # MAP and coverage only where they fit: an 80-column terminal shows the rest untruncated.
    wide = console.width >= 100
    headers = ["model", "fit s", "rec s", "P@10", "R@10", "NDCG@10"]
    headers += ["MAP@10", "coverage"] if wide else []
    for col in [*headers, "AUC", "log-loss"]:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    best = max(m.ranking["ndcg"] for m in result.models)
    for m in result.models:
        r = m.ranking
        ndcg = f"{r['ndcg']:.4f}"
        cells = [
            m.name,
            f"{m.fit_s:.2f}",
            f"{m.recommend_s:.2f}",
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"[bold]{ndcg}[/]" if r["ndcg"] == best else ndcg,
        ]
        cells += [f"{r['map']:.4f}", f"{m.coverage:.3f}"] if wide else []
        cells += [
            f"{m.ctr['auc']:.4f}" if m.ctr else "-",
            f"{m.ctr['log_loss']:.4f}" if m.ctr else "-",
        ]
        table.add_row(*cells)
    console.print(table)
    console.print(f"total {total:.1f} s", highlight=False)


@app.command(short_help="Run the benchmarks, print the ratio table.")
def bench(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="The small cases (under two minutes on 2 cores); same as --size small.",
    ),
    size: str = typer.Option("small", "--size", help="Case sizes: tiny, small or medium."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="Threads for every implementation and the read floor (default: all usable cores).",
    ),
    out: Path = typer.Option(
        Path("fastrec-bench"), "--out", help="Folder for report.md and the PNG chart."
    ),
    select: str | None = typer.Option(
        None,
        "-k",
        help="Only cases whose name contains this (with --path: a pytest -k expression).",
    ),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="Developers: run the pytest-benchmark "
        "suite in this benchmarks/ folder instead of the shipped cases.",
    ),
    report: Path | None = typer.Option(
        None,
        "--json",
        help="Developers: print the table of an "
        "existing pytest-benchmark JSON report instead of running.",
    ),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="With --path/--json: backend or "
        "library the ratios are relative to (default: NumPy reference).",
    ),
) -> None:
    """Time fastrec against the installed peers (SciPy, NumPy; scikit-learn, implicit,
    sparse_dot_topn when present) and write one Markdown report with in-run ratios."""
    if path is not None or report is not None:
        _bench_suite(select, path, report, baseline)
        return
    from . import bench as shipped

    if threads is not None and threads == 0:
        _fail("--threads must not be 0")
    try:
        written = shipped.run("small" if quick else size, threads, select, out)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(written.read_text())
    typer.echo(f"report written to {written}")


def _bench_suite(select, path, report, baseline) -> None:
    """The developers' mode: pytest-benchmark suites and their JSON, as a ratio table."""
    import tempfile

    from rich.table import Table

    from . import _bench

    try:
        if report is None:
            bench_dir = _bench.find_benchmarks(path)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "bench.json"
                code = _bench.run_suite(bench_dir, out, select)
                if not out.exists():
                    _fail(f"the benchmark run failed (pytest exit code {code}); no report")
                data = _bench.load_report(out)
        else:
            data = _bench.load_report(report)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    rows = _bench.ratio_rows(data, baseline)
    if not rows:
        _fail("no benchmarks ran (check -k)")
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("machine", "?"))
    table = Table(
        title=f"fastrec bench: {cpu}, "
        f"{data.get('datetime', '')}; ratio = {baseline or 'numpy reference'} median / "
        "median (> 1 is faster)",
        title_justify="left",
    )
    for col in ("benchmark", "case", "backend", "median s", "ratio"):
        table.add_column(col, justify="right" if col in ("median s", "ratio") else "left")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        table.add_row(r["test"], r["case"], r["backend"], f"{r['median']:.4f}", ratio)
    _console().print(table)


@app.command()
def serve(
    model_file: Path = typer.Argument(..., help="A model saved with model.save(path)."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (loopback by "
        "default; 0.0.0.0 exposes the service to the network).",
    ),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(
        1,
        "--workers",
        help="Server processes (1: one process owns the event log and the model file).",
    ),
    events: Path | None = typer.Option(
        None, "--events", help="Event log file (default: MODEL_FILE.events beside the model)."
    ),
    fold_interval: float = typer.Option(
        1.0, "--fold-interval", help="Seconds between folds of new events into the model."
    ),
    watch_interval: float = typer.Option(
        1.0, "--watch-interval", help="Seconds between looks at the model file for a replacement."
    ),
    max_body_bytes: int = typer.Option(
        1 << 20, "--max-body-bytes", help="Larger request bodies are refused (413)."
    ),
    batching: bool = typer.Option(
        True,
        "--batching/--no-batching",
        help="Micro-batch concurrent recommend requests into one model call.",
    ),
) -> None:
    """Serve a saved model over HTTP, with live events and model swaps.

    Routes: recommend, similar, explain, events, health, metrics.
    """
    try:
        from . import serve as service
    except ImportError as exc:
        _fail(f'{exc}: install the serving extra with pip install "fastrec[serve]"')
    for name, value in (("--port", port), ("--max-body-bytes", max_body_bytes)):
        if value < (0 if name == "--port" else 1) or (name == "--port" and value > 65535):
            _fail(f"{name} is out of range: {value}")
    if fold_interval < 0 or watch_interval <= 0:
        _fail("--fold-interval must be >= 0 and --watch-interval > 0")
    try:
        service.run(
            model_file,
            host=host,
            port=port,
            workers=workers,
            events_path=events,
            fold_interval=fold_interval,
            watch_interval=watch_interval,
            max_body_bytes=max_body_bytes,
            batching=batching,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
