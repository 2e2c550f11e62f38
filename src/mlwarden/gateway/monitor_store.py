"""Where the attack monitors' per-client histories live: this process, or a log in Redis.

Why a log: PRADA's growing sets, the k-NN ring buffer and the repeat filter are state
machines fed one batch at a time, and their verdict depends on the order of every query
since the client's last alert. Replicas that each see every other batch of a client see a
different machine. So with Redis storage every batch a monitor is fed (its flattened
features, predicted labels, OOD flags and repeat digests) is appended to the client's log,
and each replica brings its own copy of the client's monitors up to date by replaying,
in log order, the batches it has not seen before its own. The log's order is the one
order all replicas agree on, so every replica computes what one process fed the same
batches in that order computes, and the replica that appended a batch raises its alerts.

- `MemoryMonitorStore`: the log in this process (several `MonitorBank`s in one process,
  e.g. tests). A gateway with ``memory://`` storage uses no store at all: its bank is the
  only one and keeps today's in-process state.
- `RedisMonitorStore`: one stream per client, ``<key_prefix>:monitor:<client>``, with
  explicit ids ``0-<seq>`` from the counter ``<key_prefix>:monitor-seq:<client>``. One Lua
  script per batch appends, trims to ``max_entries`` batches (``MAXLEN ~``), refreshes the
  TTL of both keys and returns the batches after the caller's last one: one round trip,
  atomic, so two replicas can never append at the same position or miss one another.

Payloads are binary and exact (float32 features, so replay computes bit for bit what
the appending replica computed), about ``4 * dim + 21`` bytes per query.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mlwarden.core.errors import ConfigError, DataError, require
from mlwarden.gateway.errors import GatewayError

_HEADER = struct.Struct("<BBII")  # version, flags, rows, dim
_VERSION = 1
_HAS_OOD, _RESET = 1, 2
DIGEST_BYTES = 16
Appended = tuple[int, list[tuple[int, bytes]]]
"""What an append returns: the new entry's sequence number, the (seq, payload) before it."""


@dataclass(frozen=True)
class MonitorEntry:
    """One batch of one client as the monitors were fed it (or a reset of its monitors)."""

    features: torch.Tensor  # (n, dim) float32
    labels: torch.Tensor  # (n,) int64
    ood: torch.Tensor | None  # (n,) bool
    digests: list[bytes]  # what `RepeatFilter` tells exact repeats apart by
    reset: bool = False


def row_digests(x: torch.Tensor, keys: Sequence[object] | None = None) -> list[bytes]:
    """A 128-bit BLAKE2b digest per row of ``x`` (its float32 bytes) or per entry of ``keys``.

    Why not `RepeatFilter`'s own ``hash``: that one is keyed per process, so replicas would
    disagree; a cryptographic digest is the same everywhere, and a collision that would
    hide a novel query cannot be crafted."""
    if keys is None:
        data = x.detach().flatten(1).float().cpu().contiguous().numpy()
        rows: Sequence[object] = [row.tobytes() for row in data]
    else:
        rows = keys
    out = []
    for key in rows:
        raw = key if isinstance(key, bytes) else (
            key.encode("utf-8") if isinstance(key, str) else repr(key).encode("utf-8"))
        out.append(hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest())
    return out


def encode_entry(x: torch.Tensor, labels: torch.Tensor, ood: torch.Tensor | None,
                 digests: Sequence[bytes]) -> bytes:
    """A batch as bytes: header, int32 labels, uint8 OOD flags, digests, float32 features."""
    flat = x.detach().flatten(1).float().cpu().contiguous().numpy()
    n, dim = flat.shape
    if len(labels) != n or len(digests) != n or (ood is not None and len(ood) != n):
        raise DataError("features, labels, OOD flags and digests differ in length")
    parts = [_HEADER.pack(_VERSION, _HAS_OOD if ood is not None else 0, n, dim),
             labels.detach().cpu().numpy().astype("<i4").tobytes()]
    if ood is not None:
        parts.append(ood.detach().cpu().numpy().astype(np.uint8).tobytes())
    parts.append(b"".join(digests))
    parts.append(flat.astype("<f4").tobytes())
    return b"".join(parts)


def encode_reset() -> bytes:
    return _HEADER.pack(_VERSION, _RESET, 0, 0)


def decode_entry(data: bytes) -> MonitorEntry:
    """The inverse of `encode_entry` (or `encode_reset`); `DataError` for foreign bytes."""
    if len(data) < _HEADER.size:
        raise DataError("monitor log entry is truncated")
    version, flags, n, dim = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise DataError(f"monitor log entry has version {version}; this gateway reads "
                        f"{_VERSION} (replicas of different versions share one Redis)")
    if flags & _RESET:
        return MonitorEntry(torch.empty(0, 0), torch.empty(0, dtype=torch.long), None, [],
                            reset=True)
    at = _HEADER.size
    need = at + 4 * n + (n if flags & _HAS_OOD else 0) + DIGEST_BYTES * n + 4 * n * dim
    if len(data) != need:
        raise DataError(f"monitor log entry has {len(data)} bytes, expected {need}")
    labels = torch.from_numpy(np.frombuffer(data, "<i4", n, at).astype(np.int64))
    at += 4 * n
    ood = None
    if flags & _HAS_OOD:
        ood = torch.from_numpy(np.frombuffer(data, np.uint8, n, at).astype(bool))
        at += n
    digests = [data[at + i * DIGEST_BYTES: at + (i + 1) * DIGEST_BYTES] for i in range(n)]
    at += DIGEST_BYTES * n
    feats = np.frombuffer(data, "<f4", n * dim, at).astype(np.float32).reshape(n, dim)
    return MonitorEntry(torch.from_numpy(feats), labels, ood, digests)


class MonitorStore(Protocol):
    """An append-only, bounded, expiring log of monitor batches per client."""

    def append(self, client: str, payload: bytes, after: int, read: bool = True) -> Appended:
        """Append ``payload``; its sequence number and the retained entries (seq, payload)
        between ``after`` and it (none if not ``read``). When the log restarted (expired, or
        lost) and ``after`` is not below the new number, every retained entry before it."""
        ...

    def ping(self) -> bool: ...


class MemoryMonitorStore:
    """The log in this process, shared by the `MonitorBank`s given it (tests, several apps
    in one process); bounded to ``max_entries`` batches per client, expiring after
    ``ttl_seconds`` without an append."""

    def __init__(self, max_entries: int = 10_000, ttl_seconds: float = 86_400) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._logs: dict[str, tuple[int, float, deque[tuple[int, bytes]]]] = {}
        self._lock = threading.Lock()

    def append(self, client: str, payload: bytes, after: int, read: bool = True) -> Appended:
        now = time.monotonic()
        with self._lock:
            seq, expires, log = self._logs.get(client, (0, now, deque()))
            if expires < now:
                seq, log = 0, deque()
            seq += 1
            earlier = [e for e in log if e[0] > after] if 0 < after < seq else list(log)
            if not read:
                earlier = []
            log.append((seq, payload))
            while len(log) > self.max_entries:
                log.popleft()
            self._logs[client] = (seq, now + self.ttl_seconds, log)
        return seq, earlier

    def ping(self) -> bool:
        return True


_APPEND = """
local seq = redis.call('INCR', KEYS[2])
local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'p', ARGV[1])
if type(ok) == 'table' and ok.err then
  -- the counter was lost while the stream stayed: start both over
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], 1)
  seq = 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-1', 'p', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local after = tonumber(ARGV[2])
local earlier = {}
if seq > 1 and ARGV[5] == '1' then
  local start = '-'
  if after > 0 and after < seq then start = '(0-' .. after end
  earlier = redis.call('XRANGE', KEYS[1], start, '(0-' .. seq)
end
return {seq, earlier}
"""


class RedisMonitorStore:
    """The log in Redis: one stream and one counter per client (see the module docstring)."""

    def __init__(self, uri: str, key_prefix: str = "mlwarden", max_entries: int = 10_000,
                 ttl_seconds: int = 86_400) -> None:
        redis = require("redis", "serve")
        try:
            self._redis = redis.Redis.from_url(uri)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError(f"monitor storage: cannot use {uri!r}: {exc}") from None
        self._errors = (redis.RedisError,)  # type: ignore[attr-defined]
        self._script = self._redis.register_script(_APPEND)
        self.prefix = key_prefix
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds

    def keys(self, client: str) -> tuple[str, str]:
        return f"{self.prefix}:monitor:{client}", f"{self.prefix}:monitor-seq:{client}"

    def append(self, client: str, payload: bytes, after: int, read: bool = True) -> Appended:
        try:
            seq, rows = self._script(keys=self.keys(client),
                                     args=[payload, after, self.max_entries, self.ttl_seconds,
                                           "1" if read else "0"])
        except self._errors as exc:
            # fail closed: a query the monitors cannot see is not answered
            raise GatewayError(503, "monitor_storage_unavailable",
                               f"the attack monitors' storage is unreachable ({exc}); "
                               "retry later") from None
        earlier = []
        for entry_id, fields in rows:
            values = dict(zip(fields[0::2], fields[1::2], strict=True))
            earlier.append((int(entry_id.split(b"-")[1]), values[b"p"]))
        return int(seq), earlier

    def reset(self, client: str) -> int:
        """Append a reset of ``client``'s monitors (a lifted block: its evidence so far was
        acted on); every replica starts the client over when it replays it. Its number."""
        return self.append(client, encode_reset(), 0, read=False)[0]

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except self._errors:
            return False


def monitor_store(uri: str, key_prefix: str = "mlwarden", max_entries: int = 10_000,
                  ttl_seconds: int = 86_400) -> RedisMonitorStore | None:
    """The shared store for storage ``uri``: None for ``memory://`` (one process: the monitors
    keep their state in the `MonitorBank` itself), a `RedisMonitorStore` for ``redis://``."""
    if uri.startswith("memory://"):
        return None
    return RedisMonitorStore(uri, key_prefix, max_entries, ttl_seconds)
