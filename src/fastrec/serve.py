"""``fastrec serve``: a saved recommender model behind an HTTP/JSON service (Starlette + uvicorn).

Routes (ids in and out are the model's original user/item ids):

- ``POST /recommend`` ``{"user": id}`` or ``{"items": [ids], "values": [..]}`` (a user the model
  has not seen, from the items given), ``n`` (1..max_n, default 10), ``exclude_seen``,
  ``exclude`` / ``candidates`` (item ids) -> ``{"items": [...], "scores": [...]}``.
- ``GET /similar?item=a[&item=b...]&n=10[&exclude=c...][&candidate=d...]``: items similar to
  one item, or to a basket of several.
- ``POST /explain`` ``{"user": id | "items": [...], "item": id}`` -> the score, its base and
  each source's contribution (they add up to the score).
- ``POST /events`` ``{"events": [{"user", "item", "value"?, "timestamp"?}, ...]}``: written to
  the event log and fsynced before the answer; folded into the model in the background.
- ``GET /health``; ``GET /metrics`` (Prometheus text).

Model versions: a background task folds logged events into a private copy of the model
(``partial_fit``), saves it over the model file crash-safely with the number of the last event
it holds (:mod:`fastrec._serve_model`), and swaps it in by replacing one reference: a request
reads that reference once, so requests in flight finish on the version they started with. A
replacement model file written by someone else is noticed (polling its stat) and swapped in the
same way; the events it lacks are folded in by the next fold. On start, the events the model
file does not hold are folded in before the first request is served: an acknowledged event is
never lost.

Errors are JSON ``{"error": {"status": s, "message": m}}``: malformed JSON 400, unknown ids 404
(naming the id), out-of-range or ill-typed parameters 422, bodies over ``max_body_bytes`` 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _serve_model as store
from . import _serve_requests as rq
from ._eventlog import EventLog

if TYPE_CHECKING:
    from .models._base import Recommender

log = logging.getLogger("fastrec.serve")

ROUTES = ("/recommend", "/similar", "/explain", "/events", "/health", "/metrics")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


# -- micro-batching ----------------------------------------------------------------------------


class RecommendBatcher:
    """Known-user requests queued in one event-loop turn go to the model in one call.

    Each request is submitted with the model version it read; the queue is flushed by a
    callback scheduled after the requests already runnable, so under load every request parsed
    in one turn shares a kernel call (one per model version and exclude_seen flag), ranked to
    the largest n asked and cut per request: the top-n of a top-m list (m >= n) is the top-n,
    ties included (the kernels rank by score, then smaller item). ``max_batch`` bounds a call.
    """

    def __init__(self, max_batch: int = 256):
        self.max_batch = max_batch
        self._queue: list = []
        self._scheduled = False
        self.batch_sizes: Histogram | None = None  # set by the app

    def submit(self, model: Recommender, row: int, n: int, exclude_seen: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((model, row, n, exclude_seen, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        queue, self._queue, self._scheduled = self._queue, [], False
        groups: dict = {}
        for entry in queue:
            groups.setdefault((id(entry[0]), entry[3]), []).append(entry)
        for entries in groups.values():
            for start in range(0, len(entries), self.max_batch):
                self._run(entries[start : start + self.max_batch])

    def _run(self, entries) -> None:
        model, exclude_seen = entries[0][0], entries[0][3]
        rows = np.array([e[1] for e in entries], dtype=np.int64)
        n_max = max(e[2] for e in entries)
        if self.batch_sizes is not None:
            self.batch_sizes.observe(len(entries))
        try:
            top = model.recommend(rows, n_max, exclude_seen=exclude_seen)
        except Exception as exc:
            for e in entries:
                if not e[4].done():
                    e[4].set_exception(exc)
            return
        idx, scores = np.asarray(top.indices), np.asarray(top.scores)
        for r, e in enumerate(entries):
            if not e[4].done():
                e[4].set_result((idx[r, : e[2]], scores[r, : e[2]]))


# -- the service -------------------------------------------------------------------------------


class Service:
    """The served model version, the event log, metrics, and the tasks that change versions."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        events_path: str | os.PathLike[str] | None = None,
        fold_interval: float = 1.0,
        watch_interval: float = 1.0,
        max_body_bytes: int = 1 << 20,
        max_n: int = 1000,
        max_events: int = 10_000,
        batching: bool = True,
    ):
        self.model_path = Path(model_path)
        self.events_path = (
            Path(events_path)
            if events_path
            else self.model_path.with_name(self.model_path.name + ".events")
        )
        self.fold_interval, self.watch_interval = float(fold_interval), float(watch_interval)
        self.max_body_bytes, self.max_n, self.max_events = max_body_bytes, max_n, max_events
        self.batcher = RecommendBatcher() if batching else None
        # The newest version, and the (model, version) pair requests read; None until start().
        self.model: Recommender | None = None
        self.served: tuple[Recommender, int] | None = None
        self.events_held = 0
        self.version = 0
        self.log: EventLog | None = None
        self._file_sig: store.Signature | None = None
        # Made again by startup(), on the event loop that serves.
        self._change = asyncio.Lock()  # one version change at a time
        self._events_waiting = asyncio.Event()  # new events were logged
        self._tasks: list[asyncio.Task] = []
        self._init_metrics()

    def _init_metrics(self) -> None:
        r = self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "fastrec_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.m_errors = Counter(
            "fastrec_errors",
            "HTTP requests answered with an error status",
            ["route", "status"],
            registry=r,
        )
        self.m_latency = Histogram(
            "fastrec_request_latency_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.m_version = Gauge(
            "fastrec_model_version", "Version of the model being served", registry=r
        )
        self.m_pending = Gauge(
            "fastrec_events_pending",
            "Events acknowledged but not yet in the served model",
            registry=r,
        )
        self.m_pending.set_function(lambda: self.events_pending)
        self.m_version.set_function(lambda: self.version)
        self.m_events = Counter(
            "fastrec_events_accepted", "Events written to the event log", registry=r
        )
        self.m_swaps = Counter(
            "fastrec_model_swaps", "Model versions swapped in", ["reason"], registry=r
        )
        self.m_failures = Counter(
            "fastrec_model_update_failures",
            "Folds or replacement loads that failed (old version kept)",
            ["reason"],
            registry=r,
        )
        self.m_batch = Histogram(
            "fastrec_recommend_batch_size",
            "Requests per micro-batched model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        if self.batcher is not None:
            self.batcher.batch_sizes = self.m_batch

    @property
    def events_pending(self) -> int:
        return 0 if self.log is None else max(self.log.last_seq - self.events_held, 0)

    # -- versions ---------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model file, open the log, fold in the events the file lacks (blocking)."""
        sig = store.file_signature(self.model_path)
        model, held, version = store.load_model(self.model_path, mmap=False)
        self.log = EventLog(self.events_path, after_seq=held)
        if self.log.last_seq > held:
            log.info(
                "replaying events %d..%d into %s", held + 1, self.log.last_seq, self.model_path
            )
        if not self._fold_into(model, held, max(version, 1), sig):
            self._serve(model, held, max(version, 1), sig)

    def _fold_into(
        self, model: Recommender, held: int, version: int, base_sig: store.Signature | None
    ) -> bool:
        """Fold the logged events after ``held`` into ``model`` (read from the file whose
        signature is ``base_sig``), save it as ``version`` and serve it; False (nothing
        changed) when the log holds no such event (at start: nothing else runs yet)."""
        folded = self._fold_compute(model, held)
        if folded is None:
            return False
        self._fold_commit(*folded, version, base_sig)
        return True

    def _fold_compute(self, model: Recommender, held: int) -> tuple[Recommender, int] | None:
        """(new model, last event in it) of the logged events after ``held`` folded into a
        copy of ``model``, or None when there are none. The slow part: runs without the lock,
        so requests and replacements go on meanwhile."""
        assert self.log is not None, "start() opens the log before anything folds"
        events, upto = self.log.read_after(held)
        if held + 1 < self.log.first_seq() <= self.log.last_seq:
            log.warning(
                "events %d..%d are not in the log any more; folding what is there",
                held + 1,
                self.log.first_seq() - 1,
            )
        if not events:
            return None
        return store.fold_events(model, events), upto

    def _fold_commit(
        self, new: Recommender, upto: int, version: int, base_sig: store.Signature | None
    ) -> None:
        """Save a folded version (unless the file changed: ModelFileReplaced) and serve it."""
        assert self.log is not None, "start() opens the log before anything folds"
        sig = store.save_model(new, self.model_path, upto, version, expect=base_sig)
        self._serve(new, upto, version, sig)
        self.log.compact(upto)

    def _load_replacement(self, sig: store.Signature | None) -> None:
        """A new model file appeared: load it and serve it (in a thread). The logged events it
        lacks stay pending and are folded in by the next fold (the caller wakes it): a fold
        takes longer than a load, and replacements may come faster than folds."""
        model, held, version = store.load_model(self.model_path, mmap=False)
        marked = held > 0 or version > 0
        if not marked:  # trained elsewhere: assumed to hold what the served version held
            held = self.events_held
        version = max(version, self.version) + 1
        if not marked:  # marked now, so that a restart does not fold old events in again
            try:
                sig = store.save_model(model, self.model_path, held, version, expect=sig)
            except store.ModelFileReplaced:
                pass  # a newer file is there already: serve this one until that is loaded
        self._serve(model, held, version, sig)

    def _serve(
        self, model: Recommender, held: int, version: int, sig: store.Signature | None
    ) -> None:
        # One reference assignment: a request reads ``served`` once and keeps that version.
        self.served = (model, version)
        self.model, self.events_held, self.version, self._file_sig = model, held, version, sig

    async def _fold_loop(self) -> None:
        failures = 0
        while True:
            await self._events_waiting.wait()
            await asyncio.sleep(self.fold_interval)
            self._events_waiting.clear()
            model, held, version, sig = self.model, self.events_held, self.version, self._file_sig
            assert model is not None, "startup() serves a model before it starts this loop"
            try:
                folded = await asyncio.to_thread(self._fold_compute, model, held)
                if folded is None:
                    continue
                async with self._change:
                    if self.model is not model:  # a replacement came in meanwhile: fold again
                        self._events_waiting.set()
                        continue
                    await asyncio.to_thread(self._fold_commit, *folded, version + 1, sig)
                self.m_swaps.labels("events").inc()
            except store.ModelFileReplaced:
                log.info(
                    "the model file was replaced during a fold: the events are folded "
                    "into the replacement next"
                )
                self._events_waiting.set()
            except Exception:
                self.m_failures.labels("fold").inc()
                failures += 1
                log.exception("folding events into the model failed; retrying later")
                self._events_waiting.set()
                await asyncio.sleep(min(2.0**failures, 300.0))  # back off while it fails
            else:
                failures = 0

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            sig = store.file_signature(self.model_path)
            if sig is None or sig == self._file_sig:
                continue
            await asyncio.sleep(min(self.watch_interval, 0.2))
            if store.file_signature(self.model_path) != sig:
                continue  # still being written: look again next turn
            async with self._change:
                if store.file_signature(self.model_path) != sig or sig == self._file_sig:
                    continue
                try:
                    await asyncio.to_thread(self._load_replacement, sig)
                    self.m_swaps.labels("file").inc()
                    if self.events_pending:
                        self._events_waiting.set()
                except store.ModelFileReplaced:
                    pass  # replaced again meanwhile: the newest file is taken next turn
                except Exception:
                    self._file_sig = sig  # not retried until the file changes again
                    self.m_failures.labels("file").inc()
                    log.exception("the replacement model file could not be served")

    async def startup(self) -> None:
        self._change = asyncio.Lock()
        self._events_waiting = asyncio.Event()
        await asyncio.to_thread(self.start)
        self._tasks = [
            asyncio.create_task(self._fold_loop()),
            asyncio.create_task(self._watch_loop()),
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.log is not None:
            self.log.close()

    # -- routes -----------------------------------------------------------------------------
    def _served(self) -> tuple[Recommender, int]:
        """(model, version) a request works with: read once, kept to the end of the request."""
        served = self.served
        if served is None:
            raise rq.ApiError(503, "the service has not loaded its model yet")
        return served

    def _started(self) -> tuple[Recommender, EventLog]:
        """The newest model version and the event log (503 before start() loaded them)."""
        if self.model is None or self.log is None:
            raise rq.ApiError(503, "the service has not loaded its model yet")
        return self.model, self.log

    async def recommend(self, request: Request) -> JSONResponse:
        obj = await self._object(request)
        model, version = self._served()
        n = rq.int_param(obj, "n", 10, 1, self.max_n)
        exclude_seen = rq.bool_param(obj, "exclude_seen", True)
        filters = self._filters(model, obj)
        if ("user" in obj) == ("items" in obj):
            raise rq.ApiError(
                422,
                "give exactly one of user (a known user id) or items (the "
                "item ids of a user the model has not seen)",
            )
        if "user" in obj:
            row = rq.row(model, obj["user"])
            if self.batcher is not None and not filters:
                idx, scores = await self.batcher.submit(model, row, n, exclude_seen)
                top = rq.Top(idx[None, :], scores[None, :])
            else:
                top = rq.call(
                    model.recommend, np.array([row]), n, exclude_seen=exclude_seen, **filters
                )
            answer: dict[str, Any] = {"user": obj["user"]}
        else:
            top = rq.call(
                model.recommend,
                None,
                n,
                user_items=self._user_items(model, obj),
                exclude_seen=exclude_seen,
                **filters,
            )
            answer = {}
        answer.update(rq.as_answer(model, top))
        answer["model_version"] = version
        return JSONResponse(answer)

    def _filters(self, model: Recommender, obj: dict) -> dict:
        """exclude / candidates of a request as item columns (404 naming an unknown id)."""
        out = {}
        for name in ("exclude", "candidates"):
            ids = rq.id_list(obj, name, model.n_items_)
            if ids is not None:
                out[name] = rq.columns(model, ids)
        return out

    def _user_items(self, model: Recommender, obj: dict) -> sp.csr_matrix:
        """The request's own items (and values) as one CSR row over the model's columns."""
        items = rq.id_list(obj, "items", model.n_items_)
        values = obj.get("values")
        cols = rq.columns(model, items)
        if values is None:
            vals = np.ones(len(cols))
        elif (
            not isinstance(values, list)
            or len(values) != len(cols)
            or not all(rq.finite_number(v) for v in values)
        ):
            raise rq.ApiError(422, "values must be a list of finite numbers, one per item")
        else:
            vals = np.array(values, dtype=np.float64)
        m = sp.csr_matrix(
            (vals, (np.zeros(len(cols), dtype=np.int64), cols)),
            shape=(1, model.n_items_),
            dtype=model.user_items_.dtype,
        )
        m.sum_duplicates()
        return m

    async def similar(self, request: Request) -> JSONResponse:
        model, version = self._served()
        params = request.query_params
        items = params.getlist("item")
        if not items:
            raise rq.ApiError(422, "give one or more item=<id> query parameters")
        try:
            n = int(params.get("n", "10"))
        except ValueError:
            raise rq.ApiError(422, f"n must be an integer, got {params.get('n')!r}") from None
        n = rq.int_param({"n": n}, "n", 10, 1, self.max_n)
        query = {
            name: [rq.query_id(model, v) for v in params.getlist(key)]
            for name, key in (
                ("items", "item"),
                ("exclude", "exclude"),
                ("candidates", "candidate"),
            )
        }
        filters = self._filters(model, {k: v for k, v in query.items() if k != "items" and v})
        cols = rq.columns(model, rq.id_list(query, "items", model.n_items_))
        if len(cols) == 1:
            if not hasattr(model, "similar_items"):
                raise rq.ApiError(422, f"{type(model).__name__} has no similar_items")
            top = rq.call(model.similar_items, cols, n, **filters)
        else:
            if not hasattr(model, "similar_to_basket"):
                raise rq.ApiError(422, f"{type(model).__name__} has no similar_to_basket")
            top = rq.call(model.similar_to_basket, cols, n, **filters)
        answer: dict[str, Any] = {"item" if len(cols) == 1 else "basket": query["items"]}
        answer.update(rq.as_answer(model, top))
        answer["model_version"] = version
        return JSONResponse(answer)

    async def explain(self, request: Request) -> JSONResponse:
        obj = await self._object(request)
        model, version = self._served()
        if not hasattr(model, "explain"):
            raise rq.ApiError(422, f"{type(model).__name__} has no explain")
        if "item" not in obj:
            raise rq.ApiError(422, "give the item to explain")
        col = rq.columns(model, [obj["item"]])
        exclude_seen = rq.bool_param(obj, "exclude_seen", True)
        if ("user" in obj) == ("items" in obj):
            raise rq.ApiError(422, "give exactly one of user or items")
        if "user" in obj:
            who = {"user_id": np.array([rq.row(model, obj["user"])])}
        else:
            who = {"user_items": self._user_items(model, obj)}
        result = rq.call(model.explain, item_id=col, exclude_seen=exclude_seen, **who)
        answer = rq.explanation_json(model, obj["item"], result)
        answer["model_version"] = version
        return JSONResponse(answer)

    async def events(self, request: Request) -> JSONResponse:
        obj = await self._object(request)
        events = obj.get("events")
        if not isinstance(events, list) or not events:
            raise rq.ApiError(
                422, "events must be a non-empty list of {user, item, value?, timestamp?} objects"
            )
        if len(events) > self.max_events:
            raise rq.ApiError(413, f"at most {self.max_events} events per request")
        model, event_log = self._started()
        if model.user_ids_ is None or model.item_ids_ is None:
            raise rq.ApiError(
                422,
                f"this {type(model).__name__} was fit on a bare matrix "
                "without id maps: it cannot take events in original ids",
            )
        records = [rq.event_record(model, e, t) for t, e in enumerate(events)]
        first, last = await asyncio.to_thread(event_log.append, records)
        self.m_events.inc(len(records))
        self._events_waiting.set()
        return JSONResponse({"accepted": len(records), "first_seq": first, "last_seq": last})

    async def health(self, request: Request) -> JSONResponse:
        model, event_log = self._started()
        return JSONResponse(
            {
                "status": "ok",
                "model": type(model).__name__,
                "model_version": self.version,
                "model_file": str(self.model_path),
                "n_users": int(model.n_users_),
                "n_items": int(model.n_items_),
                "events_logged": event_log.last_seq,
                "events_in_model": self.events_held,
                "events_pending": self.events_pending,
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _object(self, request: Request) -> dict:
        obj = await rq.read_json(request, self.max_body_bytes)
        if not isinstance(obj, dict):
            raise rq.ApiError(422, "the body must be a JSON object")
        return obj


# -- the ASGI app ------------------------------------------------------------------------------


class _Measured:
    """ASGI middleware: count and time every request by route and status."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            s = self.service
            s.m_latency.labels(route).observe(time.perf_counter() - start)
            s.m_requests.labels(route, str(status[0])).inc()
            if status[0] >= 400:
                s.m_errors.labels(route, str(status[0])).inc()


def create_app(model_path, **options) -> Starlette:
    """The Starlette app serving ``model_path`` (options: see :class:`Service`)."""
    service = Service(model_path, **options)

    # Starlette types every handler as taking an Exception; each gets only its own kind.
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, rq.ApiError)
        return rq.error(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return rq.error(exc.status_code, str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error answering %s", request.url.path)
        return rq.error(500, f"internal error: {type(exc).__name__}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.startup()
        yield
        await service.shutdown()

    app = Starlette(
        routes=[
            Route("/recommend", service.recommend, methods=["POST"]),
            Route("/similar", service.similar, methods=["GET"]),
            Route("/explain", service.explain, methods=["POST"]),
            Route("/events", service.events, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
            Route("/metrics", service.metrics, methods=["GET"]),
        ],
        exception_handlers={
            rq.ApiError: api_error,
            HTTPException: http_error,
            Exception: unexpected,
        },
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Measured, service=service)
    return app


def run(
    model_path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, **options
) -> None:
    """Serve ``model_path`` with uvicorn until interrupted (``fastrec serve``).

    uvicorn runs its C HTTP parser and event loop (httptools, uvloop: in the ``serve`` extra)
    when they are installed; ``FASTREC_SERVE_HTTP=h11`` / ``FASTREC_SERVE_LOOP=asyncio`` pick
    the pure-Python ones (measured: the server's own ceiling, GET /health, 1.2-1.6x higher
    with the C pair on 2 shared cores).
    """
    import uvicorn

    if workers != 1:
        raise ValueError(
            "workers must be 1: one process owns the event log and the model file "
            "(run several services on copies of the model behind a balancer)"
        )
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"no such model file: {model_path}")
    store.load_model(model_path)  # a bad file fails here, before the port is taken
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # "auto": uvicorn's C HTTP parser and event loop (httptools, uvloop) when installed.
    http, loop = (
        os.environ.get("FASTREC_SERVE_HTTP", "auto"),
        os.environ.get("FASTREC_SERVE_LOOP", "auto"),
    )
    uvicorn.run(
        create_app(model_path, **options),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        http=http,
        loop=loop,
    )


__all__ = ["RecommendBatcher", "Service", "create_app", "run"]
