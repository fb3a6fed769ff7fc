"""The service's durable event log: acknowledged feedback events, appended and fsynced.

One text file of records, one record per accepted batch, one line each::

    <crc32 of the JSON, 8 hex digits> <JSON: {"first": s, "events": [[user, item, value, ts], ...]}>

Events are numbered 1, 2, ... in the order they were accepted (``first`` is the number of the
record's first event), so "the model has seen events up to s" is one integer saved with the
model. A write is acknowledged only after ``os.fsync``; a crash can leave at most the last
record torn (no newline, or a checksum that does not match), which was never acknowledged and
is cut off on open. Damage anywhere else is an error: the log is never silently shortened.

Appends from many threads are committed in groups (one write and one fsync for every batch
waiting), by :meth:`EventLog.append`'s callers taking turns as the writer. ``compact(s)``
rewrites the log without the records whose events are all <= s (temporary file, fsync,
rename), once a model that holds them is saved. Memory: an index of (first event, byte offset)
per record, O(records); events are read back from the file only when asked for.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any


class EventLogError(ValueError):
    """The event log file is damaged somewhere other than a torn last record."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a file creation in ``path``'s directory durable."""
    fd = os.open(path.parent if path.is_file() or not path.is_dir() else path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(first: int, events: list) -> bytes:
    body = json.dumps(
        {"first": first, "events": events}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode(line: bytes):
    """(first, events) of one complete line, or None when it is not a valid record."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        rec = json.loads(body)
        first, events = int(rec["first"]), rec["events"]
    except (ValueError, KeyError, TypeError):
        return None
    if first < 1 or not isinstance(events, list) or not events:
        return None
    return first, events


class EventLog:
    """An append-only, fsynced log of feedback events at ``path`` (created when missing).

    ``last_seq``: the number of the last event written. ``after_seq``: the events a model
    already holds; an empty log numbers its first event after it (so a lost or new log never
    reuses numbers the model has seen). Thread-safe; one process writes it (the service).
    """

    def __init__(self, path, *, after_seq: int = 0):
        self.path = Path(path)
        self._after_seq = int(after_seq)
        self._lock = threading.Lock()  # guards the file, the index and the commit queue
        self._index: list[tuple[int, int, int]] = []  # (first event, last event, byte offset)
        self._queue: list[tuple[list, threading.Event, list]] = []
        self._writing = False
        self._done = threading.Condition(self._lock)
        self.last_seq = 0
        self._open()

    def _open(self) -> None:
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            fsync_dir(self.path)
        self._scan()

    def _scan(self) -> None:
        """Index every record; cut off a torn last record; raise on damage before the end."""
        self._index, self.last_seq, offset = [], 0, 0
        with open(self.path, "rb") as f:
            for line in f:
                rec = _decode(line)
                if rec is None:
                    if f.read(1):
                        raise EventLogError(
                            f"{self.path}: damaged record at byte {offset} followed by more "
                            "records; refusing to drop acknowledged events (move the file "
                            "aside to start a new log)"
                        )
                    os.ftruncate(self._fd, offset)  # a torn write that was never acknowledged
                    os.fsync(self._fd)
                    break
                first, events = rec
                if self._index and first != self.last_seq + 1:
                    raise EventLogError(
                        f"{self.path}: record at byte {offset} starts at event "
                        f"{first}, expected {self.last_seq + 1}"
                    )
                self.last_seq = first + len(events) - 1
                self._index.append((first, self.last_seq, offset))
                offset += len(line)
        self._size = offset
        if not self._index:
            self.last_seq = self._after_seq

    # -- writing ----------------------------------------------------------------------------
    def append(self, events: list) -> tuple[int, int]:
        """Write ``events`` (a non-empty list of [user, item, value, timestamp]) durably.

        Returns (first, last) event numbers once the record is on disk (fsynced). Blocks the
        calling thread for one write + fsync, shared with every batch queued meanwhile.
        """
        if not events:
            raise ValueError("no events to append")
        done = threading.Event()
        result: list[Any] = []  # (first, last) once committed, then the OSError or None
        with self._lock:
            self._queue.append((events, done, result))
            while self._writing and not done.is_set():
                self._done.wait()
            if done.is_set():
                return self._result(result)
            self._writing = True
            batch, self._queue = self._queue, []
        error = None
        try:
            self._commit(batch)
        except OSError as exc:
            error = exc
        with self._lock:
            self._writing = False
            for _, ev, res in batch:
                res.append(error)
                ev.set()
            self._done.notify_all()
        return self._result(result)

    @staticmethod
    def _result(result):
        if isinstance(result[-1], OSError):
            raise result[-1]
        return result[0]

    def _commit(self, batch) -> None:
        """One write and one fsync for every queued batch (outside the lock: appends queue)."""
        seq = self.last_seq
        chunks: list[bytes] = []
        spans: list[tuple[int, int, int]] = []
        for events, _, res in batch:
            chunk = _encode(seq + 1, events)
            spans.append((seq + 1, seq + len(events), self._size + sum(map(len, chunks))))
            res.append((seq + 1, seq + len(events)))
            chunks.append(chunk)
            seq += len(events)
        data = b"".join(chunks)
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:
            # Nothing of this group is acknowledged: cut a partial write back off.
            os.ftruncate(self._fd, self._size)
            for _, _, res in batch:
                res.clear()
            raise
        with self._lock:
            self._index.extend(spans)
            self._size += len(data)
            self.last_seq = seq

    # -- reading ----------------------------------------------------------------------------
    def read_after(self, seq: int, upto: int | None = None) -> tuple[list, int]:
        """(the logged events numbered seq+1 .. upto, the number of the last one returned, or
        seq when none); upto None = all logged. Events compacted away are not returned: compare
        :meth:`first_seq` to see whether any are missing."""
        with self._lock:
            upto = self.last_seq if upto is None else min(upto, self.last_seq)
            spans = [s for s in self._index if s[1] > seq and s[0] <= upto]
        out: list[list] = []
        if not spans:
            return out, seq
        with open(self.path, "rb") as f:
            f.seek(spans[0][2])
            for first, _last, _ in spans:
                rec = _decode(f.readline())
                if rec is None or rec[0] != first:
                    raise EventLogError(f"{self.path}: record of event {first} changed on disk")
                events = rec[1]
                out.extend(events[max(seq - first + 1, 0) : upto - first + 1])
        return out, upto

    def first_seq(self) -> int:
        """The number of the oldest event still in the log (last_seq + 1 when empty)."""
        with self._lock:
            return self._index[0][0] if self._index else self.last_seq + 1

    def compact(self, applied_seq: int) -> int:
        """Drop records whose events are all <= ``applied_seq`` (held by a saved model).

        The last record is always kept, so the numbering survives a restart. Rewrites the
        rest to a temporary file, fsyncs it, renames it over the log and fsyncs the directory;
        returns the records dropped. O(bytes kept) I/O; appends wait meanwhile.
        """
        with self._lock:
            while self._writing:
                self._done.wait()
            drop = min(sum(1 for s in self._index if s[1] <= applied_seq), len(self._index) - 1)
            if drop <= 0:
                return 0
            start = self._index[drop][2] if drop < len(self._index) else self._size
            tmp = self.path.with_name(f".{self.path.name}.compact")
            with open(self.path, "rb") as src, open(tmp, "wb") as dst:
                src.seek(start)
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            self._index = [(a, b, off - start) for a, b, off in self._index[drop:]]
            self._size -= start
            return drop

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


__all__ = ["EventLog", "EventLogError", "fsync_dir"]
