"""Append-only audit trail: one JSON line per decision, chained and authenticated.

Each entry carries ``seq`` (1, 2, ...), ``prev`` (the ``hash`` of the entry before it, or
64 zeros for the first) and ``hash``. With an audit key (`AuditKeyring`, from a key file
or an environment variable, never from the log or the command line) ``hash`` is
HMAC-SHA256 under the key named by the entry's ``kid`` over the entry's canonical JSON
without ``hash``; without a key it is plain SHA-256, which only detects accidents: whoever
can write the file can recompute it. `verify_chain` with the keyring refuses any entry
that is not authenticated by a key of the ring, so an edit followed by a recomputed chain
fails as surely as a plain edit; a deletion, insertion or reordering breaks ``prev`` or
``seq``. Truncation of the newest entries leaves a valid prefix: a head file on another
path (`HeadSink`) receives an authenticated checkpoint (``seq`` and ``hash`` of the
newest entry) every ``head_every`` entries and at close, and `verify_chain` with the head
file refuses a log that lacks a checkpointed entry.

Several processes may append to one file: an exclusive ``flock`` around each append
re-reads the tail when another writer moved it. Raw inputs are never written unless
configured; the SHA-256 of the input bytes always is. `AuditTrail` is the log step of
the gateway: the one place that says which fields each decision (``start``, ``predict``,
``refuse``, ``alert``, ``stop``) records.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ConfigError, InputError

if TYPE_CHECKING:
    from mlwarden.gateway.config import AuditLogConfig
    from mlwarden.gateway.monitoring import Alert
    from mlwarden.gateway.validation import Flag

GENESIS = "0" * 64
MIN_KEY_BYTES = 16
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- the audit key --------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKeyring:
    """HMAC keys by id: the writer signs with ``active``; `verify_chain` accepts every key.

    Rotation keeps the old keys in the ring (``mlwarden audit-log keygen`` adds a key and
    makes it active), so a log that spans a rotation still verifies. Secrets are at least
    16 bytes, stored as hex.
    """

    keys: dict[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ConfigError(f"audit keyring: the active key '{self.active}' is not in the ring")
        for kid, secret in self.keys.items():
            if not _KID.match(kid):
                raise ConfigError(f"audit keyring: key id {kid!r} is not 1-64 of [A-Za-z0-9._-]")
            if len(secret) < MIN_KEY_BYTES:
                raise ConfigError(f"audit keyring: key '{kid}' is shorter than "
                                  f"{MIN_KEY_BYTES} bytes")

    @classmethod
    def from_file(cls, path: Path) -> AuditKeyring:
        """A JSON key file: ``{"active": "k2", "keys": {"k1": "<hex>", "k2": "<hex>"}}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            keys = {str(k): bytes.fromhex(v) for k, v in data["keys"].items()}
            return cls(keys, str(data["active"]))
        except FileNotFoundError:
            raise ConfigError(f"audit key file '{path}' does not exist; create it with "
                              f"`mlwarden audit-log keygen --file {path}`") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError,
                ValueError):
            raise ConfigError(f"audit key file '{path}' is not a JSON object with 'active' and "
                              "'keys' (key id -> hex secret)") from None

    @classmethod
    def from_value(cls, value: str, where: str) -> AuditKeyring:
        """``kid:hex[,kid:hex...]`` (an environment variable's form); the first is active."""
        keys: dict[str, bytes] = {}
        for part in value.split(","):
            kid, sep, secret = part.strip().partition(":")
            try:
                keys[kid] = bytes.fromhex(secret)
            except ValueError:
                keys[kid] = b""
            if not sep or not keys[kid]:
                raise ConfigError(f"{where} must read 'KEY_ID:HEX_SECRET[,KEY_ID:HEX_SECRET...]'"
                                  " (the first key signs); generate one with "
                                  "`mlwarden audit-log keygen`")
        return cls(keys, value.split(",")[0].strip().partition(":")[0])

    @classmethod
    def load(cls, key_file: Path | None, key_env: str | None) -> AuditKeyring | None:
        """The key file when given, else the environment variable when set, else None."""
        if key_file is not None:
            return cls.from_file(key_file)
        value = os.environ.get(key_env) if key_env else None
        if value:
            return cls.from_value(value, f"environment variable {key_env}")
        return None

    def seal(self, body: bytes, kid: str) -> str:
        return hmac.digest(self.keys[kid], body, "sha256").hex()


def keygen(path: Path, kid: str | None = None) -> str:
    """Add a fresh 32-byte key to the key file at ``path`` (created with mode 0600) and make
    it the active one; older keys stay for verification. Returns the new key id."""
    path = Path(path)
    ring = AuditKeyring.from_file(path) if path.exists() else None
    kid = kid or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    keys = dict(ring.keys) if ring is not None else {}
    if kid in keys:
        raise InputError(f"audit key file '{path}' already has a key '{kid}'")
    keys[kid] = secrets.token_bytes(32)
    AuditKeyring(keys, kid)  # validates the id
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"active": kid, "keys": {k: v.hex() for k, v in keys.items()}}, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return kid


def entry_hash(entry: dict[str, Any], keyring: AuditKeyring | None = None) -> str:
    """The entry's ``hash``: HMAC-SHA256 under the key its ``kid`` names, else SHA-256."""
    body = _canonical({k: v for k, v in entry.items() if k != "hash"})
    kid = entry.get("kid")
    if kid is None:
        return hashlib.sha256(body).hexdigest()
    if keyring is None or kid not in keyring.keys:
        raise KeyError(kid)
    return keyring.seal(body, kid)


def _seal(entry: dict[str, Any], keyring: AuditKeyring | None) -> None:
    if keyring is not None:
        entry["kid"] = keyring.active
    entry["hash"] = entry_hash(entry, keyring)


def _last_entry(fh: Any) -> tuple[str, int]:
    """``hash`` and ``seq`` of the last complete line of an open binary file, or genesis."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return GENESIS, 0
    block = min(size, 65536)
    while True:
        fh.seek(size - block)
        tail = fh.read(block)
        lines = tail.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or block == size:
            break
        block = min(size, block * 4)
    try:
        last = json.loads(lines[-1])
        last_hash = str(last["hash"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError("audit log's last line is not a chained entry; verify it") from None
    seq = last.get("seq")
    if not isinstance(seq, int):  # a log from before sequence numbers: count its lines
        fh.seek(0)
        seq = sum(1 for _ in fh)
        fh.seek(0, os.SEEK_END)
    return last_hash, seq


class HeadSink:
    """Checkpoints of the chain's head, appended as JSON lines to a file on another path.

    Each checkpoint (``seq`` and ``hash`` of the newest entry, ``ts``) is authenticated
    like an entry. Put it where whoever can rewrite the log cannot (another volume, a
    write-only share): a log cut before a checkpointed entry then fails `verify_chain`.
    """

    def __init__(self, path: Path, keyring: AuditKeyring | None) -> None:
        self.path = Path(path)
        self.keyring = keyring
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, seq: int, head: str, *, fsync: bool = False) -> None:
        point: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                                 "seq": seq, "head": head}
        _seal(point, self.keyring)
        with open(self.path, "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.write(_canonical(point) + b"\n")
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())


class AuditLog:
    """Appends chained entries to ``path``; safe across threads and processes.

    `append` only queues the entry (timestamped at the call); a writer thread drains the
    queue every ``interval`` seconds, and for each drained group takes the file lock once,
    links the entries to the file's current last hash and writes them with one ``write``.
    Per-entry locking and flushing cost more than the rest of a request on a busy host;
    this keeps the order and the chain while paying the system calls once per group.
    `flush` waits until everything appended so far is on disk (``fsync`` too when
    configured); `close` drains. ``keyring`` authenticates every entry (HMAC-SHA256 with
    its active key); ``heads`` receives a checkpoint every ``head_every`` entries and at
    close.
    """

    def __init__(self, path: Path, *, fsync: bool = False, interval: float = 0.02,
                 keyring: AuditKeyring | None = None, heads: HeadSink | None = None,
                 head_every: int = 1000) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.interval = interval
        self.keyring = keyring
        self.heads = heads
        self.head_every = head_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - kept open for the log's life
        with self._locked():
            self._prev, self._seq = _last_entry(self._fh)
            self._size = self._fh.tell()
        self._head_seq = self._seq
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
                self._prev, self._seq = _last_entry(self._fh)
            lines = []
            for entry in entries:
                self._seq += 1
                entry["seq"] = self._seq
                entry["prev"] = self._prev
                _seal(entry, self.keyring)
                self._prev = entry["hash"]
                lines.append(_canonical(entry))
            self._fh.write(b"\n".join(lines) + b"\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self._size = self._fh.tell()
            if self.heads is not None and self._seq - self._head_seq >= self.head_every:
                self._checkpoint()

    def _checkpoint(self) -> None:
        """Send the head (called with the file lock held, so it is this file's head)."""
        if self.heads is not None and self._seq > self._head_seq:
            self.heads.write(self._seq, self._prev, fsync=self.fsync)
            self._head_seq = self._seq

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(60)
        if self.heads is not None:
            with self._locked():
                self._checkpoint()
        self._fh.close()


_STOP = object()
log = logging.getLogger("mlwarden.gateway.audit")


def open_audit_log(config: AuditLogConfig) -> AuditLog:
    """The gateway's audit log as configured, keyed when a key is configured.

    Without a key the gateway still starts (it says so at start-up, and
    ``require_key = true`` refuses instead): the unkeyed chain still catches accidental
    damage and naive edits, and an audit trail that stops the service when a secret is
    not yet provisioned is one that operators switch off.
    """
    keyring = AuditKeyring.load(config.key_file, config.key_env)
    if keyring is None:
        hint = (f"set the environment variable {config.key_env} or "
                "[gateway.audit_log] key_file (create one with `mlwarden audit-log keygen`)")
        if config.require_key:
            raise ConfigError(f"gateway.audit_log.require_key: no audit key; {hint}")
        log.warning("the audit log %s is NOT keyed: anyone who can write it can rewrite it "
                    "undetected; %s", config.path, hint)
    else:
        log.info("audit log %s authenticated with key '%s'", config.path, keyring.active)
    heads = HeadSink(config.head_file, keyring) if config.head_file is not None else None
    return AuditLog(config.path, fsync=config.fsync, keyring=keyring, heads=heads,
                    head_every=config.head_every)


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
                input_sha256: str | None, endpoint: str = "/v1/predict") -> None:
        """A refusal: ``key`` is the prefix of the key that authenticated (None when none
        did), ``endpoint`` the path it was refused on."""
        self.event("refuse", key=key, address=address, endpoint=endpoint, status=status,
                   reason=reason, detail=detail, input_sha256=input_sha256)

    def alert(self, alert: Alert, action: str, *, key: str | None, address: str | None) -> None:
        self.event("alert", key=key, address=address, detector=alert.detector,
                   detail=alert.detail, queries=alert.queries, action=action)

    def predicted(self, *, key: str | None, address: str, inputs: Any, input_sha256: str,
                  labels: list[int], flags: list[Flag], output: str) -> None:
        """A served ``predict``: ``inputs`` is the (N, ...) array the model saw, or a text
        model's list of texts; each text is logged as its SHA-256 (``texts_sha256``, of its
        UTF-8 bytes), the text itself only with ``include_inputs``."""
        if self.log is None:
            return
        extra: dict[str, Any] = {}
        if isinstance(inputs, list):
            extra["texts_sha256"] = [hashlib.sha256(t.encode("utf-8")).hexdigest()
                                     for t in inputs]
            if self.include_inputs:
                extra["inputs"] = inputs
        elif self.include_inputs:
            extra["inputs"] = inputs.round(6).tolist()
        self.event("predict", key=key, address=address, status=200, inputs_count=len(inputs),
                   input_sha256=input_sha256, labels=labels,
                   flags=[{"check": f.check, "samples": f.samples} for f in flags],
                   output=output, **extra)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


@dataclass(frozen=True)
class ChainCheck:
    """Result of `verify_chain`: ``ok``, entries read, the first broken line if any, and the
    key ids and checkpoints that vouch for the entries."""

    ok: bool
    entries: int
    line: int | None = None
    reason: str = ""
    keyed: bool = False
    kids: tuple[str, ...] = ()
    heads: int = 0
    last_head: int = 0


def verify_chain(path: Path, keyring: AuditKeyring | None = None, *,
                 heads: Path | None = None) -> ChainCheck:
    """Walk the file and recompute every hash and link.

    With ``keyring`` every entry must be authenticated by one of its keys: an unkeyed
    (recomputable) entry fails. Without it the log must be unkeyed, and the result proves
    only that the chain is consistent. ``heads`` (a `HeadSink` file) adds its checkpoints:
    each must name an entry of the log by ``seq`` and ``hash``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"audit log '{path}' does not exist")
    prev = GENESIS
    count = 0
    kids: set[str] = set()
    hashes: dict[int, str] = {}
    want = _read_heads(heads, keyring) if heads is not None else {}

    def broken(number: int, reason: str) -> ChainCheck:
        return ChainCheck(False, count, number, reason, keyring is not None, tuple(sorted(kids)))

    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return broken(number, "truncated last line")
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return broken(number, "not valid JSON")
            if not isinstance(entry, dict) or "hash" not in entry or "prev" not in entry:
                return broken(number, "missing 'hash' or 'prev'")
            kid = entry.get("kid")
            if keyring is not None and kid is None:
                return broken(number, "not authenticated: no key id (written without the key, "
                              "or the chain was recomputed)")
            if keyring is None and kid is not None:
                return broken(number, f"entry is authenticated with audit key '{kid}'; verify "
                              "with the keyring")
            if keyring is not None and kid not in keyring.keys:
                return broken(number, f"authenticated with key '{kid}', which is not in the "
                              "keyring")
            if entry["prev"] != prev:
                return broken(number, "'prev' does not match the previous entry (line removed, "
                              "inserted or reordered)")
            if "seq" in entry and entry["seq"] != number:
                return broken(number, f"'seq' is {entry['seq']}, expected {number} (line "
                              "removed, inserted or reordered)")
            if entry_hash(entry, keyring) != entry["hash"]:
                what = ("its authentication code (edited, or signed by another key under "
                        "that id)" if keyring is not None else "its hash (edited)")
                return broken(number, f"content does not match {what}")
            prev = entry["hash"]
            count += 1
            if kid is not None:
                kids.add(kid)
            if number in want:
                hashes[number] = prev
    for seq, head in sorted(want.items()):
        if seq > count:
            return ChainCheck(False, count, count + 1,
                              f"truncated: a checkpoint names entry {seq} but the log ends at "
                              f"entry {count}", keyring is not None, tuple(sorted(kids)))
        if hashes[seq] != head:
            return ChainCheck(False, count, seq, "entry does not match its checkpoint (the log "
                              "was rewritten)", keyring is not None, tuple(sorted(kids)))
    return ChainCheck(True, count, keyed=keyring is not None, kids=tuple(sorted(kids)),
                      heads=len(want), last_head=max(want, default=0))


def _read_heads(path: Path, keyring: AuditKeyring | None) -> dict[int, str]:
    """The checkpoints of a head file, ``seq -> hash``; each must authenticate."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"head file '{path}' does not exist")
    out: dict[int, str] = {}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                point = json.loads(raw)
                kid = point.get("kid")
                ok = ((keyring is None) == (kid is None)
                      and (kid is None or kid in keyring.keys)  # type: ignore[union-attr]
                      and entry_hash(point, keyring) == point["hash"])
                seq, head = int(point["seq"]), str(point["head"])
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
                    AttributeError):
                ok = False
            if not ok:
                raise InputError(f"head file '{path}' line {number} is not an authentic "
                                 "checkpoint (edited, or written under another key)")
            out[seq] = head
    return out
