"""Rate limiting per API key and per client address: a sustained rate and a burst.

Storage is chosen by URI: ``memory://`` for one process, ``redis://host:port`` for
replicas that must share one budget. In Redis the ``limits`` library enforces a moving
window (each hit is a single Lua script, so two replicas cannot both spend the last slot).
In memory the default is our own GCRA (generic cell rate algorithm, as in ATM traffic
policing and ``redis-cell``): one timestamp per limit and client, checked and committed
for all limits under one lock. Why our own: it sits on every request's path, and
``limits``' in-memory storages cost ~10 microseconds per operation with three operations
per limit (test, hit, stats), which measurably capped the gateway's throughput.

Costs are counted in *inputs*, not requests: a batch of 50 spends 50, because model
extraction is measured in queried samples.

`ClientFlags` holds the monitors' verdicts (blocked or throttled clients, each with its
reason) in the same storage, so an alert raised on one replica holds on all of them, and
``mlwarden gateway blocks list|lift`` finds them there (in Redis; in memory through the
gateway's admin routes, `gateway.admin`). `RateGate` is the limit step of a request: it
asks both and turns their answers into refusals, and counts failed authentications per
address towards the ``failed_auth`` alert.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from mlwarden.core.errors import ConfigError, require
from mlwarden.gateway.config import FailedAuthMonitorConfig, RateLimitConfig
from mlwarden.gateway.errors import GatewayError, blocked, rate_limited

if TYPE_CHECKING:
    from mlwarden.gateway.monitoring import Alert

T = TypeVar("T")


@dataclass
class RateDecision:
    """Outcome of a rate check, with the values for the RateLimit response headers."""

    allowed: bool
    limit: int = 0
    remaining: int = 0
    reset_after: float = 0.0
    retry_after: float = 0.0
    scope: str = ""
    too_large: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit:
            self.headers = {
                "RateLimit-Limit": str(self.limit),
                "RateLimit-Remaining": str(max(self.remaining, 0)),
                "RateLimit-Reset": str(max(math.ceil(self.reset_after), 0)),
            }
            if not self.allowed and not self.too_large:
                self.headers["Retry-After"] = str(max(math.ceil(self.retry_after), 1))


_SLACK = 1e-9
"""Seconds of floating-point slack in `GcraLimiter`'s comparisons."""


class GcraLimiter:
    """In-memory GCRA for several limits at once: exact, O(1) per limit, thread-safe.

    A limit of ``amount`` per ``period`` has emission interval ``T = period / amount``; a
    request of cost ``c`` moves the client's theoretical arrival time ``tat`` to
    ``max(tat, now) + c T`` and is allowed while ``tat - period <= now``, i.e. bursts of up
    to ``amount`` and then a steady ``amount`` per ``period``.
    """

    def __init__(self, max_clients: int = 100_000) -> None:
        self._tat: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        self.max_clients = max_clients

    def check(self, items: list[tuple[str, Any, tuple[str, str]]], cost: int) -> RateDecision:
        now = time.monotonic()
        with self._lock:
            new: list[tuple[tuple[str, ...], float]] = []
            for name, item, ids in items:
                period = float(item.get_expiry())
                interval = period / item.amount
                slot = (name, *ids)
                start = max(self._tat.get(slot, now), now)
                tat = start + cost * interval
                # compared as a delay from now, with a nanosecond's slack: a full burst (cost
                # == amount) on a fresh client must pass, and (now + 60.0) - 60.0 can round
                # above now, which refused it now and then
                wait = (start - now) + cost * interval - period
                if wait > _SLACK:
                    remaining = int((now + period - max(self._tat.get(slot, now), now)) / interval)
                    return RateDecision(False, item.amount, max(remaining, 0), wait, wait, name)
                new.append((slot, tat))
            for slot, tat in new:
                self._tat[slot] = tat
            if len(self._tat) > self.max_clients:  # forget clients whose budget is full again
                for slot in [k for k, v in self._tat.items() if v <= now]:
                    del self._tat[slot]
        name, item, _ = items[0]
        period = float(item.get_expiry())
        interval = period / item.amount
        remaining = int((now + period - new[0][1]) / interval)
        return RateDecision(True, item.amount, max(remaining, 0), new[0][1] - now, 0.0, name)

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()


class RateLimiter:
    """All configured limits for one request: key sustained/burst, address sustained/burst."""

    def __init__(self, config: RateLimitConfig, throttle_rate: str | None = None) -> None:
        require("limits", "serve")
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import (
            FixedWindowRateLimiter,
            MovingWindowRateLimiter,
            SlidingWindowCounterRateLimiter,
        )

        self.config = config
        self.is_remote = config.storage.startswith(("redis://", "rediss://"))
        strategy_name = config.strategy
        if strategy_name == "auto":
            strategy_name = "moving-window" if self.is_remote else "gcra"
        if strategy_name == "gcra" and self.is_remote:
            raise ConfigError("gateway.rate_limit.strategy: 'gcra' runs in memory only; use "
                              "'moving-window' (or 'auto') with Redis")
        self.gcra = GcraLimiter() if strategy_name == "gcra" else None
        try:
            options = {"key_prefix": config.key_prefix} if self.is_remote else {}
            self.storage = storage_from_string(config.storage, **options)
        except Exception as exc:  # limits raises several types for a bad URI
            raise ConfigError(
                f"gateway.rate_limit.storage: cannot use {config.storage!r}: {exc}"
            ) from None
        strategy = {
            "moving-window": MovingWindowRateLimiter,
            "sliding-window-counter": SlidingWindowCounterRateLimiter,
            "fixed-window": FixedWindowRateLimiter,
            "gcra": MovingWindowRateLimiter,  # unused: GcraLimiter answers instead
        }[strategy_name]
        self.limiter = strategy(self.storage)
        self.key_limits = [
            (name, parse(rate))
            for name, rate in (("key", config.per_key), ("key-burst", config.per_key_burst))
            if rate
        ]
        self.address_limits = [
            (name, parse(rate))
            for name, rate in (
                ("address", config.per_address), ("address-burst", config.per_address_burst)
            )
            if rate
        ]
        self.throttle = parse(throttle_rate) if throttle_rate else None

    def check(self, key: str | None, address: str, cost: int = 1,
              throttled: bool = False) -> RateDecision:
        """Spend ``cost`` on every applicable limit, or refuse without spending.

        All limits are tested first and hit only if all pass, so a refused request does
        not eat into the other limits.
        """
        if not self.config.enabled:
            return RateDecision(True)
        items = [(n, item, ("address", address)) for n, item in self.address_limits]
        if key is not None:
            items += [(n, item, ("key", key)) for n, item in self.key_limits]
            if throttled and self.throttle is not None:
                items.append(("throttle", self.throttle, ("throttle", key)))
        if not items:
            return RateDecision(True)
        for name, item, _ids in items:
            if cost > item.amount:  # can never pass: say so instead of "retry later"
                return RateDecision(False, item.amount, 0, 0.0, 0.0, name, too_large=True)
        if self.gcra is not None:
            # key limits first so that the headers describe the key's budget
            ordered = sorted(items, key=lambda it: it[2][0] != "key")
            return self.gcra.check(ordered, cost)
        for name, item, ids in items:
            if not self.limiter.test(item, *ids, cost=cost):
                return self._refused(name, item, ids)
        for name, item, ids in items:
            if not self.limiter.hit(item, *ids, cost=cost):
                return self._refused(name, item, ids)
        # headers describe the first limit (the key's sustained rate when there is a key):
        # one storage read, not one per limit
        name, item, ids = items[-1] if key is not None and self.key_limits else items[0]
        if key is not None and self.key_limits:
            name, item = self.key_limits[0]
            ids = ("key", key)
        stats = self.limiter.get_window_stats(item, *ids)
        return RateDecision(True, item.amount, stats.remaining, stats.reset_time - time.time(),
                            0.0, name)

    def _refused(self, name: str, item: object, ids: tuple[str, str]) -> RateDecision:
        stats = self.limiter.get_window_stats(item, *ids)  # type: ignore[arg-type]
        wait = stats.reset_time - time.time()
        expiry = item.get_expiry()  # type: ignore[attr-defined]
        wait = min(max(wait, 1.0), float(expiry))
        return RateDecision(False, item.amount, stats.remaining, wait, wait, name)  # type: ignore[attr-defined]

    def ping(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:  # a readiness probe reports, it does not raise
            return False

    def reset(self) -> None:
        self.storage.reset()
        if self.gcra is not None:
            self.gcra.reset()


@dataclass(frozen=True)
class Block:
    """One blocked or throttled client, as ``mlwarden gateway blocks list`` shows it."""

    kind: str
    client: str
    seconds_left: int
    reason: str = ""
    since: str = ""


class ClientFlags:
    """Blocked and throttled clients, with expiry, in memory or in Redis.

    A flag's value records why and since when (JSON), so ``mlwarden gateway blocks list``
    can say so; in Redis a flag is the key ``<key_prefix>:flags:<kind>:<client>`` with a
    TTL, which is how the CLI finds and lifts flags that another process set.
    """

    KINDS = ("blocked", "throttled")

    def __init__(self, storage_uri: str, key_prefix: str = "mlwarden") -> None:
        self._prefix = f"{key_prefix}:flags"
        self._lock = threading.Lock()
        self._local: dict[str, tuple[float, str]] = {}
        self._counts: dict[str, tuple[float, int]] = {}
        self._redis = None
        self.is_remote = storage_uri.startswith(("redis://", "rediss://"))
        if self.is_remote:
            redis = require("redis", "serve")
            self._redis = redis.Redis.from_url(storage_uri)  # type: ignore[attr-defined]

    def set(self, kind: str, client: str, seconds: int, reason: str = "") -> None:
        name = f"{self._prefix}:{kind}:{client}"
        value = json.dumps({"reason": reason,
                            "since": datetime.now(UTC).isoformat(timespec="seconds")})
        if self._redis is not None:
            self._redis.set(name, value, ex=int(seconds))
        else:
            with self._lock:
                self._local[name] = (time.monotonic() + seconds, value)

    def has(self, kind: str, client: str) -> bool:
        name = f"{self._prefix}:{kind}:{client}"
        if self._redis is not None:
            return bool(self._redis.exists(name))
        held = self._local.get(name)
        if held is None:
            return False
        if held[0] < time.monotonic():
            with self._lock:
                self._local.pop(name, None)
            return False
        return True

    def blocked_throttled(self, client: str, address: str | None = None) -> tuple[bool, bool]:
        """Both flags of ``client`` at once, and whether ``address`` (``addr:<address>``) is
        blocked: one Redis round trip per request, not three."""
        other = f"addr:{address}" if address is not None else client
        if self._redis is None:
            is_blocked = self.has("blocked", client) or (
                other != client and self.has("blocked", other))
            return is_blocked, self.has("throttled", client)
        names = [f"{self._prefix}:blocked:{client}", f"{self._prefix}:throttled:{client}",
                 f"{self._prefix}:blocked:{other}"]
        blocked, throttled, addr_blocked = self._redis.mget(names)
        return blocked is not None or addr_blocked is not None, throttled is not None

    def clear(self, kind: str, client: str) -> bool:
        """Remove one flag; whether there was one."""
        name = f"{self._prefix}:{kind}:{client}"
        if self._redis is not None:
            return bool(self._redis.delete(name))
        with self._lock:
            held = self._local.pop(name, None)
        return held is not None and held[0] >= time.monotonic()

    def lift(self, client: str) -> list[str]:
        """Lift every flag of ``client`` (a key prefix, or ``addr:<address>``); the kinds
        that were set."""
        return [kind for kind in self.KINDS if self.clear(kind, client)]

    def blocks(self) -> list[Block]:
        """Every live flag, longest-lasting first."""
        now = time.monotonic()
        found: list[tuple[str, float, str]] = []
        if self._redis is not None:
            names = list(self._redis.scan_iter(match=f"{self._prefix}:*", count=1000))
            for name in names:
                pipe = self._redis.pipeline()
                pipe.get(name)
                pipe.ttl(name)
                value, ttl = pipe.execute()
                if value is not None and ttl is not None and ttl > 0:
                    found.append((name.decode(), float(ttl), value.decode()))
        else:
            with self._lock:
                found = [(n, until - now, v) for n, (until, v) in self._local.items()
                         if until >= now]
        out = []
        for name, left, value in found:
            kind, _, client = name.removeprefix(self._prefix + ":").partition(":")
            try:
                info = json.loads(value)
                reason, since = str(info.get("reason", "")), str(info.get("since", ""))
            except (json.JSONDecodeError, AttributeError):  # a flag from an older gateway
                reason, since = "", ""
            out.append(Block(kind, client, math.ceil(left), reason, since))
        return sorted(out, key=lambda b: -b.seconds_left)

    def count(self, what: str, client: str, window: int) -> int:
        """Add one to ``client``'s ``what`` counter in a fixed window of ``window`` seconds;
        the count so far (e.g. failed authentications of an address)."""
        name = f"{self._prefix.removesuffix(':flags')}:count:{what}:{client}"
        if self._redis is not None:
            pipe = self._redis.pipeline()
            pipe.set(name, 0, ex=int(window), nx=True)  # the window starts with its first
            pipe.incr(name)
            return int(pipe.execute()[1])
        now = time.monotonic()
        with self._lock:
            start, n = self._counts.get(name, (now, 0))
            if now - start >= window:
                start, n = now, 0
            self._counts[name] = (start, n + 1)
            if len(self._counts) > 100_000:  # forget finished windows
                for k in [k for k, (t, _) in self._counts.items() if now - t >= window]:
                    del self._counts[k]
            return n + 1


class RateGate:
    """The limit step of a request: client flags, the input budget, the brute-force guard.

    Redis calls block, so with a remote storage each runs in a worker thread and the event
    loop keeps serving; the in-memory storage answers in microseconds and runs inline.
    """

    def __init__(self, limiter: RateLimiter, flags: ClientFlags,
                 failed_auth: FailedAuthMonitorConfig | None = None) -> None:
        self.limiter = limiter
        self.flags = flags
        self.failed_auth_config = failed_auth

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.limiter.is_remote:
            import anyio

            return await anyio.to_thread.run_sync(lambda: fn(*args))
        return fn(*args)

    async def failed_auth(self, address: str) -> list[Alert]:
        """A failed authentication from ``address`` (brute-force guard): 403 while the address
        is blocked (whatever key it presents, so a block tells a guesser nothing), else one
        spent from its budget (429 once none is left) and one counted against
        ``failed_auth.max_failures``: the ``failed_auth`` alert when that is reached."""
        client = f"addr:{address}"
        if await self._call(self.flags.has, "blocked", client):
            raise blocked()
        guard = await self._call(self.limiter.check, None, address, 1)
        if not guard.allowed:
            raise rate_limited("too many requests from this address", guard.headers)
        cfg = self.failed_auth_config
        if cfg is None or not cfg.enabled:
            return []
        failures = await self._call(self.flags.count, "failed_auth", client, cfg.window_seconds)
        if failures != cfg.max_failures:  # once per window, not on every later failure
            return []
        from mlwarden.gateway.monitoring import Alert

        return [Alert("failed_auth", client, f"{failures} failed authentications within "
                      f"{cfg.window_seconds} s", failures)]

    async def admit(self, client: str, address: str | None = None) -> bool:
        """403 for a blocked client or a blocked ``address``; otherwise whether the client is
        throttled."""
        is_blocked, throttled = await self._call(self.flags.blocked_throttled, client, address)
        if is_blocked:
            raise blocked()
        return throttled

    async def spend(self, key: str | None, address: str, inputs: int,
                    throttled: bool = False) -> dict[str, str]:
        """Spend ``inputs`` on every limit of the key and the address; the RateLimit headers
        of the answer, or a 422 (a batch no window can hold) or 429 (retry later)."""
        decision = await self._call(self.limiter.check, key, address, inputs, throttled)
        if decision.too_large:
            raise GatewayError(422, "batch_exceeds_rate_limit",
                               f"a batch of {inputs} inputs exceeds the '{decision.scope}' limit "
                               f"of {decision.limit} inputs; send smaller batches")
        if not decision.allowed:
            raise rate_limited(f"rate limit '{decision.scope}' of {decision.limit} inputs per "
                               f"window exceeded; retry after {decision.headers['Retry-After']} s",
                               decision.headers)
        return decision.headers

    async def flag(self, kind: str, client: str, seconds: int, reason: str = "") -> None:
        """Mark ``client`` ``blocked`` or ``throttled`` for ``seconds``, on every replica."""
        await self._call(self.flags.set, kind, client, seconds, reason)

    async def ping(self) -> bool:
        return await self._call(self.limiter.ping)
