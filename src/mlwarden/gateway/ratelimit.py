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

`ClientFlags` holds the monitors' verdicts (blocked or throttled clients) in the same
storage, so an alert raised on one replica holds on all of them. `RateGate` is the limit
step of a request: it asks both and turns their answers into refusals.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mlwarden.core.errors import ConfigError, require
from mlwarden.gateway.config import RateLimitConfig
from mlwarden.gateway.errors import GatewayError, blocked, rate_limited

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
                tat = max(self._tat.get(slot, now), now) + cost * interval
                if tat - period > now:
                    wait = tat - period - now
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


class ClientFlags:
    """Blocked and throttled clients, with expiry, in memory or in Redis."""

    def __init__(self, storage_uri: str, key_prefix: str = "mlwarden") -> None:
        self._prefix = f"{key_prefix}:flags"
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}
        self._redis = None
        if storage_uri.startswith(("redis://", "rediss://")):
            redis = require("redis", "serve")
            self._redis = redis.Redis.from_url(storage_uri)  # type: ignore[attr-defined]

    def set(self, kind: str, client: str, seconds: int) -> None:
        name = f"{self._prefix}:{kind}:{client}"
        if self._redis is not None:
            self._redis.set(name, "1", ex=int(seconds))
        else:
            with self._lock:
                self._local[name] = time.monotonic() + seconds

    def has(self, kind: str, client: str) -> bool:
        name = f"{self._prefix}:{kind}:{client}"
        if self._redis is not None:
            return bool(self._redis.exists(name))
        until = self._local.get(name)
        if until is None:
            return False
        if until < time.monotonic():
            with self._lock:
                self._local.pop(name, None)
            return False
        return True

    def blocked_throttled(self, client: str) -> tuple[bool, bool]:
        """Both flags of ``client`` at once: one Redis round trip per request, not two."""
        if self._redis is None:
            return self.has("blocked", client), self.has("throttled", client)
        names = [f"{self._prefix}:{kind}:{client}" for kind in ("blocked", "throttled")]
        blocked, throttled = self._redis.mget(names)
        return blocked is not None, throttled is not None

    def clear(self, kind: str, client: str) -> None:
        name = f"{self._prefix}:{kind}:{client}"
        if self._redis is not None:
            self._redis.delete(name)
        else:
            with self._lock:
                self._local.pop(name, None)


class RateGate:
    """The limit step of a request: client flags, the input budget, the brute-force guard.

    Redis calls block, so with a remote storage each runs in a worker thread and the event
    loop keeps serving; the in-memory storage answers in microseconds and runs inline.
    """

    def __init__(self, limiter: RateLimiter, flags: ClientFlags) -> None:
        self.limiter = limiter
        self.flags = flags

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.limiter.is_remote:
            import anyio

            return await anyio.to_thread.run_sync(lambda: fn(*args))
        return fn(*args)

    async def failed_auth(self, address: str) -> None:
        """Spend one from the address budget for a failed authentication (brute-force guard);
        429 once the address has none left."""
        guard = await self._call(self.limiter.check, None, address, 1)
        if not guard.allowed:
            raise rate_limited("too many requests from this address", guard.headers)

    async def admit(self, client: str) -> bool:
        """403 for a blocked client; otherwise whether it is throttled."""
        is_blocked, throttled = await self._call(self.flags.blocked_throttled, client)
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

    async def flag(self, kind: str, client: str, seconds: int) -> None:
        """Mark ``client`` ``blocked`` or ``throttled`` for ``seconds``, on every replica."""
        await self._call(self.flags.set, kind, client, seconds)

    async def ping(self) -> bool:
        return await self._call(self.limiter.ping)
