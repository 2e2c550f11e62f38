"""Append-only audit trail: one JSON line per decision, chained by SHA-256.

Each entry carries ``prev`` (the hash of the entry before it, or 64 zeros for the first)
and ``hash`` = SHA-256 of its own canonical JSON without ``hash``. Editing, deleting,
reordering or inserting a line breaks the chain at that line, which `verify_chain` reports
(``mlwarden audit-log verify``). Several processes may append to one file: an exclusive
``flock`` around each append re-reads the tail when another writer moved it. Raw inputs
are never written unless configured; the SHA-256 of the input bytes always is.
`AuditTrail` is the log step of the gateway: the one place that says which fields each
decision (``start``, ``predict``, ``refuse``, ``alert``, ``stop``) records.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import InputError

if TYPE_CHECKING:
    from mlwarden.gateway.monitoring import Alert
    from mlwarden.gateway.validation import Flag

GENESIS = "0" * 64


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _last_hash(fh: Any) -> str:
    """Hash of the last complete line of an open binary file, or the genesis hash."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return GENESIS
    block = min(size, 65536)
    while True:
        fh.seek(size - block)
        tail = fh.read(block)
        lines = tail.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or block == size:
            break
        block = min(size, block * 4)
    try:
        return str(json.loads(lines[-1])["hash"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError("audit log's last line is not a chained entry; verify it") from None


class AuditLog:
    """Appends chained entries to ``path``; safe across threads and processes.

    `append` only queues the entry (timestamped at the call); a writer thread drains the
    queue every ``interval`` seconds, and for each drained group takes the file lock once,
    links the entries to the file's current last hash and writes them with one ``write``.
    Per-entry locking and flushing cost more than the rest of a request on a busy host;
    this keeps the order and the chain while paying the system calls once per group.
    `flush` waits until everything appended so far is on disk (``fsync`` too when
    configured); `close` drains.
    """

    def __init__(self, path: Path, *, fsync: bool = False, interval: float = 0.02) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.interval = interval
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the log's life
        with self._locked():
            self._prev = _last_hash(self._fh)
            self._size = self._fh.tell()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="mlwarden-audit", daemon=True)
        self._writer.start()

    def _locked(self) -> Any:
        log = self

        class _Flock:
            def __enter__(self) -> None:
                fcntl.flock(log._fh.fileno(), fcntl.LOCK_EX)

            def __exit__(self, *exc: object) -> None:
                fcntl.flock(log._fh.fileno(), fcntl.LOCK_UN)

        return _Flock()

    def append(self, event: str, **fields: Any) -> None:
        """Queue one entry (``event`` plus ``fields``); it is written in call order."""
        if self._closed:
            raise InputError(f"audit log '{self.path}' is closed")
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        self._queue.put({"ts": ts, "event": event, **fields})

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every entry appended before this call is written."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            # wake on a timer, not per entry: a thread woken for every request steals the
            # GIL from the event loop at every entry (the convoy effect)
            time.sleep(self.interval)
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [i for i in items if isinstance(i, dict)]
            if entries:
                try:
                    self._write(entries)
                except OSError:  # disk full, file removed: say so, keep serving
                    log.exception("cannot write the audit log %s", self.path)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is _STOP for item in items):
                return

    def _write(self, entries: list[dict[str, Any]]) -> None:
        with self._locked():
            self._fh.seek(0, os.SEEK_END)
            if self._fh.tell() != self._size:  # another process appended
                self._prev = _last_hash(self._fh)
            lines = []
            for entry in entries:
                entry["prev"] = self._prev
                entry["hash"] = entry_hash(entry)
                self._prev = entry["hash"]
                lines.append(_canonical(entry))
            self._fh.write(b"\n".join(lines) + b"\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self._size = self._fh.tell()

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(60)
        self._fh.close()


_STOP = object()
log = logging.getLogger("mlwarden.gateway.audit")


class AuditTrail:
    """The log step: the gateway's decisions as audit entries, each naming the model.

    ``log`` None (audit disabled) makes every call a no-op. ``include_inputs`` adds the raw
    inputs (rounded to 6 places) to ``predict`` entries; they are off by default because
    the log would then hold the clients' data.
    """

    def __init__(self, log: AuditLog | None, model: str, *, include_inputs: bool = False) -> None:
        self.log = log
        self.model = model
        self.include_inputs = include_inputs

    def event(self, event: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.append(event, model=self.model, **fields)

    def refused(self, *, key: str | None, address: str, status: int, reason: str, detail: str,
                input_sha256: str | None) -> None:
        self.event("refuse", key=key, address=address, status=status, reason=reason,
                   detail=detail, input_sha256=input_sha256)

    def alert(self, alert: Alert, action: str, *, key: str | None, address: str | None) -> None:
        self.event("alert", key=key, address=address, detector=alert.detector,
                   detail=alert.detail, queries=alert.queries, action=action)

    def predicted(self, *, key: str | None, address: str, inputs: Any, input_sha256: str,
                  labels: list[int], flags: list[Flag], output: str) -> None:
        """A served ``predict``: ``inputs`` is the (N, ...) array the model saw."""
        if self.log is None:
            return
        extra = {"inputs": inputs.round(6).tolist()} if self.include_inputs else {}
        self.event("predict", key=key, address=address, status=200, inputs_count=len(inputs),
                   input_sha256=input_sha256, labels=labels,
                   flags=[{"check": f.check, "samples": f.samples} for f in flags],
                   output=output, **extra)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


@dataclass(frozen=True)
class ChainCheck:
    """Result of `verify_chain`: ``ok``, entries read, and the first broken line if any."""

    ok: bool
    entries: int
    line: int | None = None
    reason: str = ""


def verify_chain(path: Path) -> ChainCheck:
    """Walk the file and recompute every hash and link."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"audit log '{path}' does not exist")
    prev = GENESIS
    count = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return ChainCheck(False, count, number, "truncated last line")
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return ChainCheck(False, count, number, "not valid JSON")
            if not isinstance(entry, dict) or "hash" not in entry or "prev" not in entry:
                return ChainCheck(False, count, number, "missing 'hash' or 'prev'")
            if entry["prev"] != prev:
                return ChainCheck(False, count, number,
                                  "'prev' does not match the previous entry (line removed, "
                                  "inserted or reordered)")
            if entry_hash(entry) != entry["hash"]:
                return ChainCheck(False, count, number, "content does not match its hash (edited)")
            prev = entry["hash"]
            count += 1
    return ChainCheck(True, count)
