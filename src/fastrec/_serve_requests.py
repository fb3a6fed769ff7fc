"""Requests and answers of ``fastrec serve``: JSON bodies read within a size limit, parameters
and original ids checked (each wrong thing an :class:`ApiError` with its HTTP status and a
message naming it), model results turned into JSON."""

from __future__ import annotations

import json
import math

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import _serve_model as store


class ApiError(Exception):
    """An error answer: HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, max_bytes: int):
    """The request's JSON body: 413 past ``max_bytes`` (header or stream), 400 if malformed."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        if not length.isdigit():
            raise ApiError(400, f"bad Content-Length {length!r}")
        raise ApiError(413, f"body of {length} bytes is over the limit of {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"body is over the limit of {max_bytes} bytes")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None


def int_param(obj: dict, name: str, default: int, lo: int, hi: int) -> int:
    """obj[name] (default when absent), an integer in [lo, hi]; 422 otherwise."""
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ApiError(422, f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def bool_param(obj: dict, name: str, default: bool) -> bool:
    """obj[name] (default when absent), true or false; 422 otherwise."""
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be true or false, got {value!r}")
    return value


def id_list(obj: dict, name: str, max_len: int):
    """obj[name] as a list of at most max_len ids (None when absent); 422 otherwise."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_len:
        raise ApiError(422, f"{name} must be a list of at most {max_len} item ids")
    return value


def check_id(value, what: str):
    """422 unless value can be an original id (an integer or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ApiError(422, f"{what} ids must be integers or strings, got {value!r}")


def columns(model, ids: list, what: str = "item") -> np.ndarray:
    """Item columns of original ids: 422 for a non-id, 404 naming the first unknown one."""
    cols = np.empty(len(ids), dtype=np.int64)
    for t, value in enumerate(ids):
        check_id(value, what)
        cols[t] = store.item_column(model, value)
        if cols[t] < 0:
            raise ApiError(404, f"unknown {what} {value!r}")
    return cols


def row(model, value) -> int:
    """The model's row of an original user id: 422 for a non-id, 404 naming an unknown one."""
    check_id(value, "user")
    r = store.user_row(model, value)
    if r < 0:
        raise ApiError(404, f"unknown user {value!r}")
    return r


def as_answer(model, top, r: int = 0) -> dict:
    """Row r of a TopK as {"items": original ids, "scores": floats}, padding dropped."""
    idx, scores = np.asarray(top.indices)[r], np.asarray(top.scores)[r]
    keep = idx >= 0
    return {
        "items": store.item_ids_of(model, idx[keep]),
        "scores": [float(s) for s in scores[keep]],
    }


class Top:
    """TopK-like (indices, scores) of a request answered by a micro-batch."""

    def __init__(self, indices, scores):
        self.indices, self.scores = indices, scores


def call(fn, *args, **kwargs):
    """A model call; its ValueError/TypeError (input it refuses) becomes a 422 answer."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def query_id(model, text: str):
    """A query-string id as the model's id type (ints for integer id maps)."""
    ids = model.item_ids_
    if ids is None or ids.dtype.kind in "iu":
        try:
            return int(text)
        except ValueError:
            return text
    return text


def event_record(model, event, t: int) -> list:
    """[user, item, value, timestamp] of one event object; 422 naming what is wrong."""
    if not isinstance(event, dict) or "user" not in event or "item" not in event:
        raise ApiError(422, f"events[{t}] must be an object with user and item")
    for key, ids in (("user", model.user_ids_), ("item", model.item_ids_)):
        value = event[key]
        check_id(value, key)
        want_int = ids is None or ids.dtype.kind in "iu"
        if want_int != isinstance(value, int):
            kind = "an integer" if want_int else "a string"
            raise ApiError(
                422, f"events[{t}].{key} must be {kind} like the model's {key} ids, got {value!r}"
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ApiError(422, f"events[{t}].{key} is out of the int64 range")
    for key in ("value", "timestamp"):
        if event.get(key) is not None and not finite_number(event[key]):
            raise ApiError(422, f"events[{t}].{key} must be a finite number, got {event[key]!r}")
    return [event["user"], event["item"], event.get("value"), event.get("timestamp")]


def explanation_json(model, item, e) -> dict:
    """An :class:`~fastrec.models.Explanation` as JSON; its sources as original ids where
    they are users or items (``score == base + sum(contributions)``)."""
    if e.kind == "items":
        sources = store.item_ids_of(model, e.sources)
    elif e.kind == "users":
        sources = store.user_ids_of(model, e.sources)
    else:  # feature columns or model positions
        sources = np.asarray(e.sources).tolist()
    details = {
        k: v.item() if isinstance(v, np.generic) else v
        for k, v in (e.details or {}).items()
        if isinstance(v, (int, float, str, bool, np.generic))
    }
    return {
        "item": item,
        "score": float(e.score),
        "base": float(e.base),
        "kind": e.kind,
        "sources": sources,
        "contributions": np.asarray(e.contributions).tolist(),
        "details": details,
    }
