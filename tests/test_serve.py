"""fastrec serve: the service in a subprocess on a free loopback port (bad requests, bounded
load, swaps under load, events folded in, kill -9 and replay), and its parts in process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import fastrec
from fastrec import data
from fastrec._eventlog import EventLog, EventLogError
from fastrec._serve_model import (
    ModelFileReplaced,
    file_signature,
    load_model,
    save_model,
)
from fastrec.models import ItemKNN

# The service subprocesses import the fastrec under test (installed, or the source tree).
SRC = Path(fastrec.__file__).resolve().parents[1]


def _inter(seed=0):
    return data.synthetic(200, 80, impressions_per_user=30, seed=seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``fastrec serve`` in a subprocess; every call bounded by a timeout."""

    def __init__(self, model_path, *extra):
        self.model_path = Path(model_path)
        self.port = _free_port()
        env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastrec.cli",
                "serve",
                str(model_path),
                "--port",
                str(self.port),
                "--watch-interval",
                "0.1",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode())
            try:
                if self.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("service did not start")
            time.sleep(0.1)

    def request(self, method, path, body=None, raw=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body))
            conn.request(method, path, payload, headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read()) if r.getheader("content-type", "").startswith(
                "application/json"
            ) else r.read()
        finally:
            conn.close()

    def wait_until(self, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.request("GET", "/health")[1]
            if pred(health):
                return health
            time.sleep(0.05)
        raise TimeoutError(f"condition not met; health {health}")

    def kill(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        self.proc.stderr.close()


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.npz"
    ItemKNN(k=10).fit(_inter()).save(path)
    return path


@pytest.fixture
def server(model_file):
    s = Server(model_file, "--fold-interval", "0.05")
    yield s
    s.kill()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service for the tests that change nothing (so CI starts it once)."""
    path = tmp_path_factory.mktemp("shared") / "model.npz"
    ItemKNN(k=10).fit(_inter()).save(path)
    s = Server(path, "--fold-interval", "0.05")
    s.model_file = path
    yield s
    s.kill()


def _counter(server, line_start):
    for line in server.request("GET", "/metrics")[1].decode().splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def _expected(path, user, n=10):
    model = ItemKNN.load(path)
    row = model.user_ids_.tolist().index(user)
    top = model.recommend([row], n)
    keep = top.indices[0] >= 0
    return model.item_ids_[top.indices[0][keep]].tolist(), top.scores[0][keep].tolist()


def test_recommend_answers_as_the_model(shared):
    server, model_file = shared, shared.model_file
    for user in (0, 7, 150):
        status, body = server.request("POST", "/recommend", {"user": user, "n": 5})
        assert status == 200
        items, scores = _expected(model_file, user, 5)
        assert body["items"] == items
        assert np.allclose(body["scores"], scores, rtol=1e-6)
    status, body = server.request("GET", "/similar?item=3&n=4")
    expected = ItemKNN.load(model_file).similar_items([3], 4)
    assert status == 200 and body["items"] == expected.indices[0][expected.indices[0] >= 0].tolist()


def test_unseen_users_filters_baskets_and_explanations(shared):
    server, model = shared, ItemKNN.load(shared.model_file)
    user = int(model.user_ids_[4])
    status, body = server.request(
        "POST", "/recommend", {"items": [3, 5], "values": [1, 2], "n": 4, "exclude": [7]}
    )
    want = model.recommend(user_items=[{3: 1.0, 5: 2.0}], n=4, exclude=[7])
    assert status == 200 and body["items"] == model.decode_items(want.indices[0]).tolist()
    status, body = server.request(
        "POST", "/recommend", {"user": user, "n": 3, "candidates": [1, 2, 3, 9, 11]}
    )
    want = model.recommend(users=[user], n=3, candidates=[1, 2, 3, 9, 11])
    keep = want.indices[0] >= 0
    assert status == 200 and body["items"] == model.decode_items(want.indices[0][keep]).tolist()
    status, body = server.request("GET", "/similar?item=3&item=4&n=5&exclude=9")
    want = model.similar_to_basket(items=[3, 4], n=5, exclude=[9])
    assert status == 200 and body["basket"] == [3, 4]
    assert body["items"] == model.decode_items(want.indices[0][want.indices[0] >= 0]).tolist()
    top_item = body["items"][0]
    status, body = server.request("POST", "/explain", {"items": [3, 4], "item": top_item})
    assert status == 200 and body["kind"] == "items" and set(body["sources"]) <= {3, 4}
    assert np.isclose(body["base"] + sum(body["contributions"]), body["score"])
    status, body = server.request("POST", "/recommend", {"user": user, "n": 1})
    status, body = server.request("POST", "/explain", {"user": user, "item": body["items"][0]})
    assert status == 200 and np.isclose(sum(body["contributions"]), body["score"])
    seen = int(model.item_ids_[model.user_items_[model.user_index([user])[0]].indices[0]])
    status, body = server.request("POST", "/explain", {"user": user, "item": seen})
    assert status == 422 and "own items" in body["error"]["message"]


@pytest.mark.parametrize(
    "method,path,body,status,needle",
    [
        ("POST", "/recommend", b'{"user": 3,', 400, "malformed JSON"),
        ("POST", "/recommend", b"\xff\xfe", 400, "malformed JSON"),
        ("POST", "/recommend", b'{"user": NaN}', 400, "malformed JSON"),
        ("POST", "/events", b"[1, 2", 400, "malformed JSON"),
        ("POST", "/recommend", {"user": 987654}, 404, "unknown user 987654"),
        ("POST", "/recommend", {"user": "alice"}, 404, "unknown user 'alice'"),
        ("GET", "/similar?item=55555", None, 404, "unknown item 55555"),
        ("GET", "/similar?item=x1", None, 404, "unknown item 'x1'"),
        ("GET", "/similar?item=3&exclude=4444", None, 404, "unknown item 4444"),
        ("POST", "/recommend", {"items": [1, 777]}, 404, "unknown item 777"),
        ("POST", "/recommend", {"user": 1, "candidates": [2, -5]}, 404, "unknown item -5"),
        ("POST", "/explain", {"user": 1, "item": 31337}, 404, "unknown item 31337"),
        ("POST", "/explain", {"user": 1}, 422, "the item to explain"),
        ("POST", "/recommend", {"items": [1, 2], "values": [1]}, 422, "values must be"),
        ("GET", "/nowhere", None, 404, "Not Found"),
        ("POST", "/recommend", {"user": 3, "n": 0}, 422, "n must be in [1, 1000]"),
        ("POST", "/recommend", {"user": 3, "n": 10**9}, 422, "n must be in"),
        ("POST", "/recommend", {"user": 3, "n": "ten"}, 422, "n must be an integer"),
        ("POST", "/recommend", {"user": 3, "n": True}, 422, "n must be an integer"),
        ("POST", "/recommend", {"user": 3, "exclude_seen": 1}, 422, "exclude_seen"),
        ("POST", "/recommend", {"user": [3]}, 422, "ids must be integers or strings"),
        ("POST", "/recommend", {}, 422, "exactly one of user"),
        ("POST", "/recommend", [1, 2], 422, "JSON object"),
        ("GET", "/similar?item=3&n=-1", None, 422, "n must be in"),
        ("GET", "/similar?item=3&n=abc", None, 422, "n must be an integer"),
        ("GET", "/similar", None, 422, "item=<id>"),
        ("POST", "/events", {"events": []}, 422, "non-empty list"),
        ("POST", "/events", {"events": [{"user": 1}]}, 422, "events[0]"),
        ("POST", "/events", {"events": [{"user": 1, "item": "a"}]}, 422, "events[0].item"),
        ("POST", "/events", {"events": [{"user": 1, "item": 2, "value": "x"}]}, 422, "value"),
        ("POST", "/events", {"events": [{"user": 1, "item": 2, "value": 1e309}]}, 400, "malformed"),
        ("POST", "/events", {"events": [{"user": 2**70, "item": 2}]}, 422, "int64"),
        ("GET", "/recommend", None, 405, "Method Not Allowed"),
    ],
)
def test_bad_requests_get_a_json_error(shared, method, path, body, status, needle):
    raw = body if isinstance(body, bytes) else None
    got, answer = shared.request(method, path, None if raw is not None else body, raw=raw)
    assert got == status, answer
    assert answer["error"]["status"] == status
    assert needle in answer["error"]["message"]


def test_oversized_bodies_413(shared):
    server = shared
    big = json.dumps({"user": 3, "pad": "x" * (2 << 20)})
    status, answer = server.request("POST", "/recommend", raw=big)
    assert status == 413 and "over the limit" in answer["error"]["message"]
    # A chunked body (no Content-Length) is cut off while it streams in.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/events",
            body=iter([b"x" * 65536] * 40),
            encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["error"]["status"] == 413
    finally:
        conn.close()
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'status="500"' not in metrics


def _load(server, n_threads, n_requests, users, failures, answers, stop=None):
    def run(t):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for i in range(n_requests):
                if stop is not None and stop.is_set():
                    return
                user = users[(t * 31 + i) % len(users)]
                conn.request("POST", "/recommend", json.dumps({"user": user, "n": 5}))
                r = conn.getresponse()
                body = json.loads(r.read())
                if r.status != 200:
                    failures.append((r.status, body))
                else:
                    answers.append((user, body["model_version"], body["items"]))
        except OSError as exc:
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    return threads


def test_bounded_load_all_answers_right(shared):
    server, model_file = shared, shared.model_file
    ok = 'fastrec_requests_total{route="/recommend",status="200"}'
    before = _counter(server, ok)
    users = list(range(0, 200, 7))
    failures, answers = [], []
    for th in _load(server, 8, 40, users, failures, answers):
        th.join(120)
    assert not failures and len(answers) == 320
    expected = {u: _expected(model_file, u, 5)[0] for u in users}
    assert all(items == expected[u] for u, _, items in answers)
    metrics = server.request("GET", "/metrics")[1].decode()
    assert _counter(server, ok) == before + 320
    assert "fastrec_request_latency_seconds_bucket" in metrics
    assert "fastrec_model_version 1.0" in metrics


def test_swap_under_load(server, model_file, tmp_path):
    """The model file is replaced 3 times while 6 clients load the service: no request
    fails, versions only go up, and the last version answers as the replacement model."""
    replacement = tmp_path / "other.npz"
    ItemKNN(k=3).fit(_inter()).save(replacement)
    users = list(range(0, 200, 3))
    failures, answers, stop = [], [], threading.Event()
    threads = _load(server, 6, 10_000, users, failures, answers, stop)
    try:
        for swap in range(3):
            time.sleep(0.3)
            tmp = tmp_path / f".swap{swap}.npz"
            tmp.write_bytes(replacement.read_bytes())
            os.replace(tmp, model_file)
            server.wait_until(lambda h, v=swap + 2: h["model_version"] >= v)
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not failures
    assert server.request("GET", "/health")[1]["model_version"] == 4
    versions = {v for _, v, _ in answers}
    assert {1, 4} <= versions
    final = {u: _expected(replacement, u, 5)[0] for u in users}
    assert all(items == final[u] for u, v, items in answers if v == 4)


def test_events_are_folded_in_and_saved(server, model_file):
    # A new user, a new item, and a known user's new item.
    events = [
        {"user": 5000, "item": 3},
        {"user": 5000, "item": 9000, "value": 1.0},
        {"user": 0, "item": 9000, "timestamp": 12.5},
    ]
    status, body = server.request("POST", "/events", {"events": events})
    assert status == 200 and body == {"accepted": 3, "first_seq": 1, "last_seq": 3}
    health = server.wait_until(lambda h: h["events_in_model"] == 3 and h["events_pending"] == 0)
    assert health["model_version"] == 2
    status, body = server.request("POST", "/recommend", {"user": 5000, "n": 3})
    assert status == 200
    model, held, version = load_model(model_file)
    assert (held, version) == (3, 2)
    row = model.user_ids_.tolist().index(5000)
    seen = model.item_ids_[model.user_items_[row].indices].tolist()
    assert seen == [3, 9000]


def test_replacement_gets_the_pending_events(model_file, tmp_path):
    """Events acknowledged but not folded when a replacement arrives end up in it."""
    server = Server(model_file, "--fold-interval", "2")
    try:
        assert server.request("POST", "/events", {"events": [{"user": 7777, "item": 5}]})[0] == 200
        tmp = tmp_path / ".new.npz"
        ItemKNN(k=3).fit(_inter(seed=1)).save(tmp)
        os.replace(tmp, model_file)
        server.wait_until(lambda h: h["model_version"] >= 3 and h["events_pending"] == 0)
        assert server.request("POST", "/recommend", {"user": 7777})[0] == 200
    finally:
        server.kill()
    model, held, version = load_model(model_file)
    assert model.k == 3 and held == 1 and version == 3 and 7777 in model.user_ids_.tolist()


@pytest.mark.parametrize("fold_interval", ["3600", "0.05"])
def test_kill9_loses_no_acknowledged_event(model_file, fold_interval):
    """Events stream in (one client thread); the service is killed with SIGKILL mid-stream,
    with no fold yet (interval an hour) or folds, saves and log compactions going on: after a
    restart every event that was answered 200 is in the model it serves and in its file."""
    server = Server(model_file, "--fold-interval", fold_interval)
    acked, stop = [], threading.Event()

    def stream():
        i = 0
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                ev = [{"user": 10_000 + i, "item": i % 80}, {"user": 10_000 + i, "item": 79}]
                conn.request("POST", "/events", json.dumps({"events": ev}))
                if conn.getresponse().status == 200:
                    acked.append(10_000 + i)
            except OSError:
                return
            finally:
                conn.close()
            i += 1

    th = threading.Thread(target=stream)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill(signal.SIGKILL)
    finally:
        stop.set()
        th.join(30)
    assert len(acked) >= 30
    server = Server(model_file, "--fold-interval", "3600")
    try:
        health = server.request("GET", "/health")[1]
        assert health["events_pending"] == 0 and health["events_in_model"] >= 2 * len(acked)
        for user in (acked[0], acked[len(acked) // 2], acked[-1]):
            assert server.request("POST", "/recommend", {"user": user})[0] == 200
    finally:
        server.kill()
    model, held, _ = load_model(model_file)
    known = set(model.user_ids_.tolist())
    assert set(acked) <= known and held >= 2 * len(acked)


def test_bad_replacement_keeps_serving(server, model_file):
    tmp = model_file.with_name(".bad.npz")
    tmp.write_bytes(b"not a model")
    os.replace(tmp, model_file)
    time.sleep(0.6)
    status, body = server.request("POST", "/recommend", {"user": 3})
    assert status == 200 and body["model_version"] == 1
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'fastrec_model_update_failures_total{reason="file"} 1.0' in metrics


def test_model_without_id_maps_serves_indices_and_refuses_events(tmp_path):
    path = tmp_path / "bare.npz"
    model = ItemKNN(k=10).fit(_inter().matrix)
    model.save(path)
    server = Server(path)
    try:
        status, body = server.request("POST", "/recommend", {"user": 2, "n": 3})
        want = model.recommend([2], 3)
        assert status == 200 and body["items"] == want.indices[0].tolist()
        assert server.request("POST", "/recommend", {"user": 10**6})[0] == 404
        status, body = server.request("POST", "/events", {"events": [{"user": 1, "item": 2}]})
        assert status == 422 and "without id maps" in body["error"]["message"]
    finally:
        server.kill()


def test_cli_refuses_missing_and_non_model_files(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    bad = tmp_path / "x.npz"
    bad.write_text("nope")
    for path, needle in (
        (tmp_path / "missing.npz", "no such model file"),
        (bad, "not a fastrec recommender model file"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "fastrec.cli", "serve", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.returncode == 1 and needle in r.stderr, r.stderr


# -- the parts, in process ----------------------------------------------------------------


def test_event_log_numbers_group_commits_and_survives_reopen(tmp_path):
    path = tmp_path / "ev.log"
    log = EventLog(path)
    spans = []

    def writer(t):
        for i in range(20):
            spans.append(log.append([[t, i, None, None]] * (1 + i % 3)))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    spans.sort()
    assert spans[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in pairwise(spans))
    last = spans[-1][1]
    events, upto = log.read_after(0)
    assert len(events) == last == upto
    log.close()
    again = EventLog(path)
    assert again.last_seq == last
    assert again.read_after(last - 2) == (events[-2:], last)
    again.close()


def test_event_log_cuts_a_torn_tail_and_refuses_damage_inside(tmp_path):
    path = tmp_path / "ev.log"
    log = EventLog(path)
    log.append([[1, 2, None, None]])
    log.append([[3, 4, 1.5, 7]])
    log.close()
    good = path.read_bytes()
    path.write_bytes(good + b'1234abcd {"first":3,"ev')  # a write cut short by a crash
    log = EventLog(path)
    assert log.last_seq == 2 and path.read_bytes() == good
    assert log.append([[5, 6, None, None]]) == (3, 3)
    log.close()
    damaged = bytearray(path.read_bytes())
    damaged[12] ^= 1  # inside the first record, more records after it
    path.write_bytes(bytes(damaged))
    with pytest.raises(EventLogError, match="damaged record"):
        EventLog(path)


def test_event_log_compaction_keeps_the_numbering(tmp_path):
    path = tmp_path / "ev.log"
    log = EventLog(path)
    for i in range(5):
        log.append([[i, i, None, None]] * 2)
    assert log.compact(10) == 4  # the last record always stays
    assert log.first_seq() == 9 and log.read_after(8) == ([[4, 4, None, None]] * 2, 10)
    assert log.append([[9, 9, None, None]]) == (11, 11)
    log.close()
    assert EventLog(path).last_seq == 11
    empty = EventLog(tmp_path / "new.log", after_seq=41)
    assert empty.append([[1, 1, None, None]]) == (42, 42)


def test_failed_save_leaves_the_old_file(tmp_path, model_file):
    before = model_file.read_bytes()

    class Broken(ItemKNN):
        def save(self, path):
            Path(path).write_bytes(b"half a file")
            raise OSError("disk full")

    broken = Broken(k=10).fit(_inter())
    with pytest.raises(OSError, match="disk full"):
        save_model(broken, model_file, 5, 2)
    assert model_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    base = file_signature(model_file)
    save_model(ItemKNN.load(model_file), model_file, 5, 2, expect=base)
    assert load_model(model_file)[1:] == (5, 2)
    # A replacement written while a version was being made is never overwritten.
    replaced = model_file.read_bytes()
    with pytest.raises(ModelFileReplaced):
        save_model(ItemKNN.load(model_file), model_file, 9, 3, expect=base)
    assert model_file.read_bytes() == replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    with zipfile.ZipFile(model_file) as zf:
        assert "fastrec_serve.npy" in zf.namelist()


def test_batched_answers_equal_single_calls(model_file):
    import asyncio

    from fastrec.serve import RecommendBatcher

    model = ItemKNN.load(model_file)
    batcher = RecommendBatcher(max_batch=4)
    calls = []
    real = model.recommend
    model.recommend = lambda rows, n, **kw: calls.append(len(rows)) or real(rows, n, **kw)
    asks = [(r, 1 + r % 7, r % 2 == 0) for r in range(10)]

    async def main():
        return await asyncio.gather(*(batcher.submit(model, r, n, ex) for r, n, ex in asks))

    got = asyncio.run(main())
    assert sorted(calls) == [1, 1, 4, 4]  # two exclude_seen groups of 5, cut at max_batch 4
    for (r, n, ex), (idx, scores) in zip(asks, got):
        want = real([r], n, exclude_seen=ex)
        assert np.array_equal(idx, want.indices[0]) and np.array_equal(scores, want.scores[0])
