"""Load generator for ``fastrec serve``: throughput and latency percentiles at fixed concurrency.

Starts the service on a copy of a model (loopback, a free port) in a subprocess, or targets a
running one (``--url``, loopback addresses only), then for each concurrency level keeps that
many HTTP/1.1 keep-alive connections busy with ``POST /recommend {"user": u, "n": 10}`` for
random known users, until ``--requests`` answers or ``--seconds`` have passed (whichever comes
first: every run stops by itself). ``--swaps K`` replaces the model file K times during the
last level and ``--events-per-s R`` posts a stream of feedback events meanwhile; a request
that gets anything but 200, or no answer, is a failure. Prints one table (and ``--json``).

    python benchmarks/serve_load.py                      # mid set, ItemKNN k=100, c = 1 16 64
    python benchmarks/serve_load.py --swaps 10 --events-per-s 50 --concurrency 64
    python benchmarks/serve_load.py --no-batching        # the service without micro-batching

The client is one asyncio process with pre-encoded requests; it shares the machine's cores
with the service, so on few cores its own cost is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

HERE = Path(__file__).resolve().parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(size: str, kind: str, k: int, factors: int) -> Path:
    """The benchmark model file (cached under benchmarks/.data/)."""
    sys.path.insert(0, str(HERE))
    import datasets

    from fastrec import data, models

    path = datasets.CACHE / f"serve-{size}-{kind}-{k if kind == 'itemknn' else factors}.npz"
    if path.exists():
        return path
    m = datasets.interactions(size)
    rows, cols = m.nonzero()
    inter = data.from_arrays(rows, cols, duplicates="max")
    if kind == "itemknn":
        model = models.ItemKNN(k=k).fit(inter)
    else:
        model = models.ALS(factors=factors).fit(inter)
    datasets.CACHE.mkdir(exist_ok=True)
    model.save(path)
    return path


class Service:
    """``fastrec serve`` in a subprocess on a copy of the model; stopped on exit."""

    def __init__(self, model: Path, workdir: Path, extra: list[str]):
        self.model = workdir / "model.npz"
        shutil.copyfile(model, self.model)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastrec.cli",
                "serve",
                str(self.model),
                "--port",
                str(self.port),
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "serve.log", "wb"),
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the service did not answer /health in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(host: str, port: int, path: str, obj) -> bytes:
    body = json.dumps(obj).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def worker(host, port, requests, stop_at, budget, latencies, failures):
    """One keep-alive connection sending requests until the budget or the time runs out."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        failures.append(f"connect: {exc}")
        return
    try:
        while budget[0] > 0 and time.perf_counter() < stop_at:
            budget[0] -= 1
            req = requests[random.randrange(len(requests))]
            t0 = time.perf_counter()
            writer.write(req)
            try:
                status, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(f"connection: {exc!r}")
                return
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                failures.append(f"{status}: {body[:200]!r}")
    finally:
        writer.close()


async def event_stream(host, port, rate, stop_at, n_users, n_items, counts):
    """Post one event every 1/rate seconds (random known user and item) until stop_at."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            ev = {"user": random.randrange(n_users), "item": random.randrange(n_items)}
            writer.write(post(host, port, "/events", {"events": [ev]}))
            status, body = await read_response(reader)
            counts["events" if status == 200 else "event_failures"] += 1
            await asyncio.sleep(1.0 / rate)
    finally:
        writer.close()


async def swapper(model_file: Path, source: Path, n_swaps: int, seconds: float, counts):
    """Replace the served model file n_swaps times, evenly over ``seconds`` (copy + rename)."""
    for i in range(n_swaps):
        await asyncio.sleep(seconds / (n_swaps + 1))
        tmp = model_file.with_name(f".swap-{i}.npz")
        await asyncio.to_thread(shutil.copyfile, source, tmp)
        os.replace(tmp, model_file)
        counts["swaps_written"] += 1


async def run_level(
    url,
    concurrency,
    n_requests,
    seconds,
    users,
    *,
    swaps=0,
    model_file=None,
    source=None,
    events_per_s=0.0,
    n_items=0,
    floor=False,
):
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if floor:  # the server's own cost: a route that does no model work
        requests = [f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()]
    else:
        requests = [post(host, port, "/recommend", {"user": int(u), "n": 10}) for u in users]
    # Warm-up: every connection's first requests (and any first-call compilation) unmeasured.
    warm_stop = time.perf_counter() + 1.0
    await asyncio.gather(
        *(
            worker(host, port, requests, warm_stop, [concurrency * 20], [], [])
            for _ in range(concurrency)
        )
    )
    latencies, failures, counts = [], [], {"events": 0, "event_failures": 0, "swaps_written": 0}
    budget = [n_requests]
    start = time.perf_counter()
    stop_at = start + seconds
    side = []
    if swaps:
        side.append(swapper(model_file, source, swaps, seconds, counts))
    if events_per_s:
        side.append(event_stream(host, port, events_per_s, stop_at, len(users), n_items, counts))
    await asyncio.gather(
        *(
            worker(host, port, requests, stop_at, budget, latencies, failures)
            for _ in range(concurrency)
        ),
        *side,
    )
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    return {
        "route": "/health" if floor else "/recommend",
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 1),
        **{
            f"p{q}_ms": round(float(np.percentile(lat, q)), 3) if lat.size else None
            for q in (50, 90, 99)
        },
        "max_ms": round(float(lat.max()), 3) if lat.size else None,
        "failures": len(failures),
        "failure_examples": failures[:3],
        **counts,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service (loopback only); default: start one")
    ap.add_argument("--model", type=Path, help="model file to serve (default: build one)")
    ap.add_argument("--size", default="mid", help="benchmark data size (small, mid, large)")
    ap.add_argument("--kind", default="itemknn", choices=("itemknn", "als"))
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--requests", type=int, default=20_000, help="per level, at most")
    ap.add_argument("--seconds", type=float, default=10.0, help="per level, at most")
    ap.add_argument("--swaps", type=int, default=0, help="model file replacements, last level")
    ap.add_argument("--events-per-s", type=float, default=0.0, help="event stream, last level")
    ap.add_argument("--no-batching", action="store_true")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also load GET /health (no model "
        "work) at each level: the server and client's own cost",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep-log", type=Path, help="copy the started service's log here")
    args = ap.parse_args(argv)
    if args.requests < 1 or not 0 < args.seconds <= 600 or min(args.concurrency) < 1:
        ap.error("--requests >= 1, 0 < --seconds <= 600, --concurrency >= 1")
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        ap.error("--url must be a loopback address: this generator never loads other hosts")
    source = args.model or build_model(args.size, args.kind, args.k, args.factors)
    with tempfile.TemporaryDirectory() as tmp:
        service = None
        if args.url:
            url = args.url
        else:
            extra = ["--watch-interval", "0.25", "--fold-interval", "0.5"]
            service = Service(
                source, Path(tmp), extra + (["--no-batching"] if args.no_batching else [])
            )
            url = service.url
        try:
            if service:
                service.wait_ready()
            health = get_json(url + "/health")
            users = np.random.default_rng(0).integers(0, health["n_users"], 4096)
            results = []
            for c in args.concurrency if args.floor else ():
                results.append(
                    asyncio.run(run_level(url, c, args.requests, args.seconds, users, floor=True))
                )
            for i, c in enumerate(args.concurrency):
                last = i == len(args.concurrency) - 1
                results.append(
                    asyncio.run(
                        run_level(
                            url,
                            c,
                            args.requests,
                            args.seconds,
                            users,
                            swaps=args.swaps if last and service else 0,
                            model_file=service.model if service else None,
                            source=source,
                            events_per_s=args.events_per_s if last else 0.0,
                            n_items=health["n_items"],
                        )
                    )
                )
            after = get_json(url + "/health")
            metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
            swaps = {
                line.split()[0]: line.split()[1]
                for line in metrics.splitlines()
                if line.startswith(
                    ("fastrec_model_swaps_total", "fastrec_model_update_failures_total")
                )
            }
        finally:
            if service:
                service.stop()
                if args.keep_log:
                    shutil.copyfile(Path(tmp) / "serve.log", args.keep_log)
    print(
        f"fastrec serve load: {health['model']} {health['n_users']} users x "
        f"{health['n_items']} items, batching={'off' if args.no_batching else 'on'}, "
        f"CPU {cpu_name()}, {os.cpu_count()} CPUs; model versions "
        f"{health['model_version']} -> {after['model_version']}, events pending at the end "
        f"{after['events_pending']}, {swaps}"
    )
    cols = (
        "route",
        "concurrency",
        "requests",
        "req_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "failures",
        "events",
        "event_failures",
        "swaps_written",
    )
    print(" ".join(f"{c:>14}" for c in cols))
    for r in results:
        print(" ".join(f"{r[c]!s:>14}" for c in cols))
        for ex in r["failure_examples"]:
            print("   failure:", ex)
    if args.json:
        args.json.write_text(json.dumps({"health": after, "results": results}, indent=1))
    return 1 if any(r["failures"] or r["event_failures"] for r in results) else 0


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return (
        f"{info.get('Model name', '?').strip()} family {info.get('CPU family', '?').strip()}"
        f" model {info.get('Model', '?').strip()}"
    )


if __name__ == "__main__":
    sys.exit(main())
