"""`fastrec demo` and `fastrec bench`: the table, and one clear error line for bad input."""

import importlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import fastrec.demo
from fastrec import _bench
from fastrec.cli import app

runner = CliRunner()


@pytest.fixture
def ranker(monkeypatch):
    """LogisticCTR when it is installed, else the test ranker (the demo's plumbing is the same)."""
    try:
        importlib.import_module("fastrec.models.logistic")
    except ImportError:
        from _ranker import TinyLogistic

        monkeypatch.setattr(fastrec.demo, "ranker", lambda *a, **k: TinyLogistic())


def one_error_line(result, match):
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:") and match in text, text


def test_demo_prints_one_row_per_model(ranker):
    result = runner.invoke(
        app, ["demo", "--users", "300", "--items", "120", "--threads", "1", "--backend", "numpy"]
    )
    assert result.exit_code == 0, result.output
    for name in ("Popularity", "ItemKNN", "UserKNN", "ALS", "Hybrid", "NDCG@10", "AUC"):
        assert name in result.output


def test_demo_on_a_movielens_file(ranker, tmp_path):
    from fastrec import data

    d = data.synthetic(200, 80, seed=1, impressions_per_user=30)
    rows, cols = d.matrix.nonzero()
    path = tmp_path / "u.data"
    path.write_text(
        "".join(
            f"{d.user_ids[r]}\t{d.item_ids[c]}\t5\t{i}\n"
            for i, (r, c) in enumerate(zip(rows, cols))
        )
    )
    result = runner.invoke(app, ["demo", "--data", str(path)])
    assert result.exit_code == 0, result.output
    assert "u.data" in result.output and "Hybrid" in result.output


def test_demo_missing_file_is_one_error_line(tmp_path):
    one_error_line(
        runner.invoke(app, ["demo", "--data", str(tmp_path / "nope.csv")]), "no such file"
    )


def test_demo_malformed_file_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t5\t10\n1\t3\n")
    one_error_line(runner.invoke(app, ["demo", "--data", str(bad)]), "line 2")
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    one_error_line(runner.invoke(app, ["demo", "--data", str(binary)]), "not a UTF-8")


def test_demo_bad_backend_is_one_error_line():
    one_error_line(runner.invoke(app, ["demo", "--backend", "gpu"]), "--backend")


REPORT = {
    "machine_info": {"cpu": {"brand_raw": "test cpu"}},
    "datetime": "2026-11-27",
    "benchmarks": [
        {
            "name": "test_cosine[numpy-mid]",
            "group": "cosine",
            "params": {"backend": "numpy", "size": "mid"},
            "stats": {"median": 4.0},
        },
        {
            "name": "test_cosine[numba-mid]",
            "group": "cosine",
            "params": {"backend": "numba", "size": "mid"},
            "stats": {"median": 1.0},
        },
        {
            "name": "test_cosine[implicit-mid]",
            "group": "cosine",
            "params": {"library": "implicit", "size": "mid"},
            "stats": {"median": 2.0},
        },
        {
            "name": "test_cosine[numba-small]",
            "group": "cosine",
            "params": {"backend": "numba", "size": "small"},
            "stats": {"median": 0.5},
        },
    ],
}


def test_ratio_rows_against_reference_and_named_baseline():
    rows = {(r["backend"], r["case"]): r["ratio"] for r in _bench.ratio_rows(REPORT)}
    assert rows[("numba", "size=mid")] == pytest.approx(4.0)
    assert rows[("implicit", "size=mid")] == pytest.approx(2.0)
    assert rows[("numba", "size=small")] is None  # no reference measured for that case
    rows = {
        r["backend"]: r["ratio"]
        for r in _bench.ratio_rows(REPORT, "implicit")
        if r["case"] == "size=mid"
    }
    assert rows["numba"] == pytest.approx(2.0)


def test_bench_prints_ratio_table_from_a_report(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(REPORT))
    result = runner.invoke(app, ["bench", "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "4.00x" in result.output and "test_cosine" in result.output


def test_bench_bad_report_is_one_error_line(tmp_path):
    one_error_line(
        runner.invoke(app, ["bench", "--json", str(tmp_path / "x.json")]),
        "no such benchmark report",
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    one_error_line(runner.invoke(app, ["bench", "--json", str(bad)]), "not a pytest-benchmark")
    one_error_line(runner.invoke(app, ["bench", "--path", str(tmp_path)]), "no benchmark suite")


def test_demo_reports_every_stage(ranker):
    stages = []
    fastrec.demo.run(n_users=200, n_items=80, backend="numpy", stage=stages.append)
    assert len(stages) == fastrec.demo.N_STAGES
    assert stages[0] == "loading data" and stages[-1] == "evaluating Hybrid"


def recbole_file(tmp_path, value_name="rating:float", values=None):
    from fastrec import data

    d = data.synthetic(200, 80, seed=2, impressions_per_user=30)
    rows, cols = d.matrix.nonzero()
    rng = np.random.default_rng(0)
    values = rng.integers(1, 6, rows.size) if values is None else values(rng, rows.size)
    path = tmp_path / "ml.inter"
    lines = [f"user_id:token\titem_id:token\t{value_name}\ttimestamp:float\n"]
    lines += [
        f"{d.user_ids[r]}\t{d.item_ids[c]}\t{v}\t{i}\n"
        for i, (r, c, v) in enumerate(zip(rows, cols, values))
    ]
    path.write_text("".join(lines))
    return path, int(np.sum(values > 3.5))


def test_demo_reads_recbole_and_prints_the_threshold(ranker, tmp_path):
    path, n_kept = recbole_file(tmp_path)
    result = runner.invoke(app, ["demo", "--data", str(path), "--quiet", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"ratings in column 'rating' > 3.5 are interactions ({n_kept} of" in result.output
    result = runner.invoke(app, ["demo", "--data", str(path), "-q", "--threshold", "4.5"])
    assert "> 4.5 are interactions" in result.output


def test_demo_score_column_is_ratings_and_flags_decide(ranker, tmp_path):
    path, _ = recbole_file(tmp_path, "score:float")
    result = runner.invoke(app, ["demo", "--data", str(path), "-q"])
    assert "ratings in column 'score' > 3.5" in result.output, result.output
    result = runner.invoke(app, ["demo", "--data", str(path), "-q", "--implicit"])
    assert "every event is an interaction (values in 'score' ignored)" in result.output
    one_error_line(
        runner.invoke(app, ["demo", "--data", str(path), "--implicit", "--threshold", "2"]),
        "--threshold",
    )
    # Columns by flag; a column left over is named.
    result = runner.invoke(
        app,
        ["demo", "--data", str(path), "-q", "--value-col", "timestamp", "--timestamp-col", "score"],
    )
    assert "weighted by column 'timestamp'" in result.output, result.output
    one_error_line(
        runner.invoke(app, ["demo", "--data", str(path), "--user-col", "who"]), "no column 'who'"
    )


def test_demo_unused_column_is_named(ranker, tmp_path):
    path, _ = recbole_file(tmp_path, "stars:float")
    result = runner.invoke(app, ["demo", "--data", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "no value column" in result.output and "columns not used: stars" in result.output
    result = runner.invoke(app, ["demo", "--data", str(path), "-q", "--value-col", "stars"])
    assert "ratings in column 'stars'" in result.output


def test_demo_footer_counts_what_it_counted(ranker):
    result = fastrec.demo.run(n_users=200, n_items=80, backend="numpy", ctr_requests=3000)
    assert 0 < result.n_ctr_requests <= result.n_requests < 3000
    out = runner.invoke(
        app,
        ["demo", "--users", "200", "--items", "80", "--backend", "numpy", "-q"],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    assert f"of {result.n_ctr_requests} of the {result.n_requests} requests" in " ".join(
        out.output.split()
    )
