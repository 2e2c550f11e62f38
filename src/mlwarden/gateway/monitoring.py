"""Per-client attack monitors: model extraction (PRADA) and query-based black-box probing.

- `ExtractionDetector` follows PRADA (Juuti et al., 2019, "PRADA: protecting against DNN
  model stealing attacks"): for each query it records the minimum L2 distance to the
  client's earlier queries of the same predicted class (a growing set that keeps only
  queries farther than a per-class threshold) and runs a Shapiro-Wilk normality test on
  those distances. Natural traffic gives roughly normal distances; extraction traffic
  (random and synthetic inputs, small steps around seeds) gives a mixture that fails the
  test, ``W < delta``. Pure random noise gives normal distances too, so the detector also
  watches the share of the client's recent queries that the OOD validator flagged: a
  knockoff client sampling noise (Orekondy et al., 2019) sends far more than the
  validator's calibrated false-rejection rate.
- `QueryAttackDetector` follows stateful detection (Chen, Carlini & Wagner, 2019,
  "Stateful detection of black-box adversarial attacks"): it keeps a bounded history of
  the client's queries and counts queries whose mean distance to their k nearest
  predecessors is below a threshold calibrated on benign data. Decision-based attacks
  (HopSkipJump, boundary attack) query long runs of near-identical inputs and trip it.

Both work on the flattened input and keep bounded state per client; `MonitorBank` holds
one pair per client with least-recently-used eviction and feeds them a batch at a time,
after `RepeatFilter` has dropped exact repeats of the client's recent queries (retries and
fixed probes are not evidence of an attack). With Redis storage the bank keeps a shared
log per client (`mlwarden.gateway.monitor_store`) that every replica replays, so replicas
detect as one process does. `MonitorActions` is the monitor step of a
request: it records the alerts its batch raised (and the ``failed_auth`` alerts of the
brute-force guard, `ratelimit.RateGate.failed_auth`) and throttles or blocks the client
for the ``block_seconds`` of the monitor that raised it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.gateway.errors import blocked

if TYPE_CHECKING:
    from mlwarden.gateway.audit_log import AuditTrail
    from mlwarden.gateway.config import MonitoringConfig
    from mlwarden.gateway.metrics import GatewayMetrics
    from mlwarden.gateway.monitor_store import MonitorStore

log = logging.getLogger("mlwarden.gateway")


@dataclass(frozen=True)
class Alert:
    """A monitor decided that a client is attacking; ``detail`` says on what evidence."""

    detector: str
    client: str
    detail: str
    queries: int


class ExtractionDetector:
    """PRADA's distance-distribution test for one client."""

    def __init__(
        self, delta: float = 0.90, min_samples: int = 100, window: int = 500,
        max_growing_set: int = 2000, max_ood_rate: float = 0.25, ood_min_samples: int = 50,
    ) -> None:
        if not 0 < delta < 1:
            raise ParameterError(f"delta must be in (0, 1), got {delta}")
        if min_samples < 20:
            raise ParameterError(f"min_samples must be at least 20, got {min_samples}")
        if not 0 < max_ood_rate <= 1:
            raise ParameterError(f"max_ood_rate must be in (0, 1], got {max_ood_rate}")
        self.max_ood_rate = max_ood_rate
        self.ood_min_samples = ood_min_samples
        self.ood_flags_: deque[bool] = deque(maxlen=window)
        self.delta = delta
        self.min_samples = min_samples
        self.window = window
        self.max_growing_set = max_growing_set
        self.test_every = 10
        self._since_test = 0
        self.growing_: dict[int, np.ndarray] = {}
        self.growing_dists_: dict[int, list[float]] = {}
        self.thresholds_: dict[int, float] = {}
        self.distances_: deque[float] = deque(maxlen=window)
        self.queries_ = 0
        self.last_w_: float | None = None

    def update(
        self, x: torch.Tensor, labels: torch.Tensor, ood: torch.Tensor | None = None
    ) -> float | None:
        """Add a batch of queries; returns the Shapiro-Wilk W once enough distances exist."""
        if ood is not None:
            self.ood_flags_.extend(bool(v) for v in ood.tolist())
        flat = x.detach().flatten(1).float().cpu().numpy()
        added = 0
        for row, label in zip(flat, labels.tolist(), strict=True):
            self.queries_ += 1
            g = self.growing_.get(label)
            if g is None:
                self.growing_[label] = row[None].copy()
                self.growing_dists_[label] = []
                self.thresholds_[label] = 0.0
                continue
            d = float(np.sqrt(((g - row) ** 2).sum(axis=1).min()))
            if d <= 1e-9:
                continue  # an exact repeat (a retry, a cache miss) teaches an attacker nothing
            self.distances_.append(d)
            added += 1
            if d > self.thresholds_[label] and len(g) < self.max_growing_set:
                self.growing_[label] = np.vstack([g, row[None]])
                dists = self.growing_dists_[label]
                dists.append(d)
                spread = float(np.std(dists, ddof=1)) if len(dists) > 1 else 0.0
                floor = float(np.mean(dists)) - spread
                self.thresholds_[label] = max(self.thresholds_[label], floor)
        self._since_test += added
        if len(self.distances_) < self.min_samples:
            return None
        # the test costs O(n log n): run it every `test_every` new distances, not per query
        if self.last_w_ is None or self._since_test >= self.test_every:
            self.last_w_ = shapiro_w(list(self.distances_))
            self._since_test = 0
        return self.last_w_

    @property
    def ood_rate(self) -> float | None:
        if len(self.ood_flags_) < self.ood_min_samples:
            return None
        return sum(self.ood_flags_) / len(self.ood_flags_)

    def evidence(self) -> str | None:
        """Why this client looks like an extraction attack, or None."""
        if self.last_w_ is not None and self.last_w_ < self.delta:
            return f"PRADA Shapiro-Wilk W={self.last_w_:.3f} < delta={self.delta}"
        rate = self.ood_rate
        if rate is not None and rate > self.max_ood_rate:
            return (f"{rate:.0%} of the last {len(self.ood_flags_)} queries are "
                    f"out of distribution (limit {self.max_ood_rate:.0%})")
        return None

    def is_attack(self) -> bool:
        return self.evidence() is not None


def shapiro_w(values: list[float]) -> float:
    """Shapiro-Wilk W (scipy's implementation); 1.0 for a constant sample."""
    import warnings

    from scipy.stats import shapiro

    if max(values) - min(values) <= 1e-12:
        return 0.0  # identical distances are the opposite of natural traffic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(shapiro(values).statistic)


class QueryAttackDetector:
    """Chen et al.'s k-NN stateful detector for one client."""

    def __init__(self, threshold: float, k: int = 10, history: int = 5000,
                 hits_to_alert: int = 25) -> None:
        if threshold <= 0:
            raise ParameterError(f"threshold must be positive, got {threshold}")
        if k < 1 or history < k:
            raise ParameterError(f"need 1 <= k <= history, got k={k}, history={history}")
        self.threshold = threshold
        self.k = k
        self.history = history
        self.hits_to_alert = hits_to_alert
        self._buf: torch.Tensor | None = None  # ring buffer (history, D) and squared norms
        self._sq: torch.Tensor | None = None
        self._count = 0
        self._next = 0
        self.hits_ = 0
        self.queries_ = 0

    @property
    def buffer_(self) -> torch.Tensor:
        """The remembered queries, oldest first (at most ``history``)."""
        if self._buf is None:
            return torch.empty(0, 0)
        if self._count < self.history:
            return self._buf[: self._count]
        return torch.roll(self._buf, -self._next, dims=0)

    def update(self, x: torch.Tensor) -> int:
        """Add a batch; returns how many of its queries were probes (k-NN distance < threshold).

        Squared distances come from ``|a|^2 + |b|^2 - 2ab`` (one matrix product against the
        ring buffer), which keeps a 5,000-query history cheap per query. Torch rather than
        NumPy: it honours the process's thread setting (NumPy's BLAS spins on busy hosts).
        """
        flat = x.detach().flatten(1).float().cpu()
        n, dim = flat.shape
        if self._buf is None:
            self._buf = torch.zeros(self.history, dim)
            self._sq = torch.zeros(self.history)
        if dim != self._buf.shape[1]:
            raise DataError("query dimension changed for the same client")
        assert self._sq is not None
        sq = (flat * flat).sum(1)
        hist, hsq = self._buf[: self._count], self._sq[: self._count]
        d2 = torch.addmm(hsq[None, :], flat, hist.T, alpha=-2.0).add_(sq[:, None])
        if n > 1:  # earlier queries of the same batch are predecessors too
            d_self = torch.addmm(sq[None, :], flat, flat.T, alpha=-2.0).add_(sq[:, None])
            d_self.masked_fill_(torch.ones(n, n, dtype=torch.bool).triu(), float("inf"))
            d2 = torch.cat([d2, d_self], dim=1)
        k = min(self.k, d2.shape[1])
        hits = 0
        if k:
            near = d2.topk(k, dim=1, largest=False).values.clamp_min(0).sqrt()
            finite = torch.isfinite(near)
            count = finite.sum(1)
            mean = torch.where(finite, near, torch.zeros_like(near)).sum(1) / count.clamp_min(1)
            # a query with fewer than k predecessors averages over those it has
            enough = count >= torch.clamp(torch.arange(n) + self._count, max=self.k)
            hits = int(((count > 0) & enough & (mean < self.threshold)).sum())
        end = self._next + n
        if n >= self.history:
            self._buf[:] = flat[-self.history:]
            self._sq[:] = sq[-self.history:]
            self._next = 0
        elif end <= self.history:
            self._buf[self._next : end] = flat
            self._sq[self._next : end] = sq
            self._next = end % self.history
        else:
            first = self.history - self._next
            self._buf[self._next :] = flat[:first]
            self._sq[self._next :] = sq[:first]
            self._buf[: n - first] = flat[first:]
            self._sq[: n - first] = sq[first:]
            self._next = n - first
        self._count = min(self._count + n, self.history)
        self.hits_ += hits
        self.queries_ += n
        return hits

    def is_attack(self) -> bool:
        return self.hits_ >= self.hits_to_alert


def calibrate_knn_threshold(x: torch.Tensor, k: int = 10, quantile: float = 0.001) -> float:
    """Benign k-NN mean distance at ``quantile`` within ``x`` (Chen et al.'s calibration).

    Distances inside a whole training set are smaller than those inside one client's
    history, so this threshold errs towards fewer false alarms.
    """
    flat = x.detach().flatten(1).float().cpu()
    if len(flat) <= k:
        raise DataError(f"need more than k={k} samples to calibrate, got {len(flat)}")
    means = []
    for start in range(0, len(flat), 512):
        d = torch.cdist(flat[start : start + 512], flat)
        d[torch.arange(len(d)), torch.arange(start, start + len(d))] = float("inf")
        means.append(d.topk(k, dim=1, largest=False).values.mean(1))
    value = float(torch.quantile(torch.cat(means).double(), quantile))
    return max(value, 1e-6)


class RepeatFilter:
    """The exact repeats among a client's queries, remembered for its last ``window``
    distinct queries (a digest of each query's bytes).

    Why: a client retrying a request, or a probe sending one fixed input, repeats a query
    exactly; that teaches an attacker nothing the first answer did not, but to the k-NN
    monitor it is a run of zero distances (17 retries of one request got a key blocked)
    and to PRADA a pile of identical distances. Only novel queries reach the detectors.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._order: deque[int] = deque()
        self._seen: set[int] = set()

    def novel(self, x: torch.Tensor, keys: Sequence[object] | None = None) -> list[int]:
        """Rows of ``x`` not seen before (nor earlier in ``x``); remembers them.

        The digest is Python's keyed hash of the row's bytes, or of its entry in ``keys``
        (a text model's texts: the same text embeds to vectors that differ in their last
        bits with the padding of its batch) (SipHash, with a per-process random key): 8
        bytes per remembered query, and a collision that would hide a novel query from the
        monitors cannot be crafted without the key."""
        if self.window == 0:
            return list(range(len(x)))
        if keys is None:
            data = x.detach().flatten(1).float().cpu().contiguous().numpy().tobytes()
            width = len(data) // max(len(x), 1)
            keys = [data[i * width:(i + 1) * width] for i in range(len(x))]
        keep = []
        for i in range(len(x)):
            digest = hash(keys[i])
            if digest in self._seen:
                continue
            keep.append(i)
            self._seen.add(digest)
            self._order.append(digest)
            if len(self._order) > self.window:
                self._seen.discard(self._order.popleft())
        return keep


@dataclass
class _ClientState:
    extraction: ExtractionDetector | None
    query_attack: QueryAttackDetector | None
    repeats: RepeatFilter
    seq: int = 0  # the last entry of the shared log fed to these monitors (0: none)


class MonitorBank:
    """One extraction and one query-attack detector per client, LRU-bounded; exact repeats
    of a client's recent queries (``repeat_window``) are filtered out first.

    With a ``store`` (`mlwarden.gateway.monitor_store`; Redis when replicas share one) every
    batch is appended to the client's shared log and the detectors here replay, in log
    order, the batches other replicas appended before it: each replica's detectors are
    then those of one process fed every batch, and an attacker spread across replicas is
    caught after as many queries as against one. Without one the state is this process's.
    """

    def __init__(
        self,
        *,
        extraction: dict[str, object] | None,
        query_attack: dict[str, object] | None,
        max_clients: int = 10_000,
        repeat_window: int = 5000,
        store: MonitorStore | None = None,
    ) -> None:
        self.extraction = extraction
        self.query_attack = query_attack
        self.max_clients = max_clients
        self.repeat_window = repeat_window
        self.store = store
        self._clients: OrderedDict[str, _ClientState] = OrderedDict()
        self._lock = threading.Lock()

    def _fresh(self) -> tuple[ExtractionDetector | None, QueryAttackDetector | None]:
        ext = ExtractionDetector(**self.extraction) if self.extraction is not None else None  # type: ignore[arg-type]
        qa = QueryAttackDetector(**self.query_attack) if self.query_attack is not None else None  # type: ignore[arg-type]
        return ext, qa

    def _fresh_state(self, client: str) -> _ClientState:
        entry = _ClientState(*self._fresh(), RepeatFilter(self.repeat_window))
        self._clients[client] = entry
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return entry

    def _get(self, client: str) -> _ClientState:
        entry = self._clients.get(client)
        if entry is None:
            return self._fresh_state(client)
        self._clients.move_to_end(client)
        return entry

    def observe(
        self, client: str, x: torch.Tensor, labels: torch.Tensor, ood: torch.Tensor | None = None,
        repeat_keys: Sequence[object] | None = None,
    ) -> list[Alert]:
        """Feed a batch of one client's queries (exact repeats removed first).

        A detector that alerts starts over with a fresh state: the alert is raised once for
        its evidence, and a client whose block is lifted must show new evidence to be
        blocked again (instead of being re-blocked on the old, or never again)."""
        if self.store is None:
            return self._feed(self._get(client), client, x, labels, ood, repeat_keys)
        if self.extraction is None and self.query_attack is None:
            return []
        from mlwarden.gateway.monitor_store import decode_entry, encode_entry, row_digests

        payload = encode_entry(x, labels, ood, row_digests(x, repeat_keys))
        with self._lock:
            state = self._get(client)
            seq, earlier = self.store.append(client, payload, state.seq)
            state = self._catch_up(client, state, earlier, seq)
            # fed from its decoded form, exactly as the other replicas will replay it
            entry = decode_entry(payload)
            alerts = self._feed(state, client, entry.features, entry.labels, entry.ood,
                                entry.digests)
            state.seq = seq
        return alerts

    def _catch_up(self, client: str, state: _ClientState, earlier: list[tuple[int, bytes]],
                  seq: int) -> _ClientState:
        """Replay the batches other replicas appended to ``client``'s log before ``seq``;
        their alerts were raised by the replicas that appended them."""
        from mlwarden.gateway.monitor_store import decode_entry

        first = earlier[0][0] if earlier else seq
        if first != state.seq + 1:
            if first != 1:  # the log no longer holds what this replica last saw
                log.warning("monitor history of %s rebuilt from the %d batches the shared log "
                            "retains (raise [gateway.monitoring] shared_entries to keep more)",
                            client, len(earlier))
            state = self._fresh_state(client)
        for number, payload in earlier:
            entry = decode_entry(payload)
            if entry.reset:
                state = self._fresh_state(client)
            else:
                self._feed(state, client, entry.features, entry.labels, entry.ood,
                           entry.digests)
            state.seq = number
        return state

    def _feed(
        self, state: _ClientState, client: str, x: torch.Tensor, labels: torch.Tensor,
        ood: torch.Tensor | None, repeat_keys: Sequence[object] | None,
    ) -> list[Alert]:
        ext, qa = state.extraction, state.query_attack
        alerts: list[Alert] = []
        if ext is None and qa is None:
            return alerts
        keep = state.repeats.novel(x, repeat_keys)
        if not keep:
            return alerts
        if len(keep) < len(x):
            idx = torch.tensor(keep)
            x, labels = x[idx], labels[idx]
            ood = ood[idx] if ood is not None else None
        if ext is not None:
            ext.update(x, labels, ood)
            evidence = ext.evidence()
            if evidence is not None:
                alerts.append(Alert("extraction", client, evidence, ext.queries_))
                state.extraction = self._fresh()[0]
        if qa is not None:
            qa.update(x)
            if qa.is_attack():
                alerts.append(Alert("query_attack", client,
                                    f"{qa.hits_} queries within k-NN distance "
                                    f"{qa.threshold:.3g} of earlier ones", qa.queries_))
                state.query_attack = self._fresh()[1]
        return alerts

    def observe_batch(
        self, x: torch.Tensor, labels: torch.Tensor, ood: torch.Tensor | None,
        requests: Sequence[tuple[str, int]], repeat_keys: Sequence[object] | None = None,
    ) -> dict[str, list[Alert]]:
        """Feed a batch of several requests: ``requests`` is (client, rows) per request, in
        the batch's row order. One `observe` per client with its rows in arrival order, so
        the k-NN search over a client's history costs one matrix product, not one per
        request. ``repeat_keys``: per row, what identifies it for `RepeatFilter` (default its
        bytes). The alerts raised, per client."""
        rows_of: dict[str, list[int]] = {}
        start = 0
        for client, n in requests:
            rows_of.setdefault(client, []).extend(range(start, start + n))
            start += n
        if len(rows_of) == 1:  # the whole batch is one client's: no gather needed
            (client,) = rows_of
            return {client: self.observe(client, x, labels, ood, repeat_keys)}
        alerts: dict[str, list[Alert]] = {}
        for client, rows in rows_of.items():
            idx = torch.tensor(rows)
            alerts[client] = self.observe(
                client, x[idx], labels[idx], ood[idx] if ood is not None else None,
                [repeat_keys[r] for r in rows] if repeat_keys is not None else None)
        return alerts

    def reset(self, client: str) -> None:
        """Forget ``client``'s evidence (its block was lifted), on every replica sharing the
        store: the reset is an entry of the client's log, replayed like its batches."""
        if self.store is None:
            self._clients.pop(client, None)
            return
        from mlwarden.gateway.monitor_store import encode_reset

        with self._lock:
            seq, _ = self.store.append(client, encode_reset(), 0, read=False)
            self._fresh_state(client).seq = seq


class MonitorActions:
    """The monitor step: act on the alerts a request's batch raised for its client.

    Each alert is kept in ``raised``, logged, counted, audited, and, per its detector's
    ``action``, throttles or blocks the client through ``flag`` (the shared client flags).
    A block answers 403 to every request of the client in that batch, not only the one
    that carried the alert.
    """

    def __init__(
        self, config: MonitoringConfig, flag: Callable[[str, str, int, str], Awaitable[None]], *,
        audit: AuditTrail | None = None, metrics: GatewayMetrics | None = None,
        raised: list[Alert] | None = None,
    ) -> None:
        self.config = config
        self.flag = flag
        self.audit = audit
        self.metrics = metrics
        self.raised = raised if raised is not None else []

    def action(self, alert: Alert) -> str:
        """``log``, ``throttle`` or ``block``: what the alert's detector is configured to do."""
        return str(getattr(self.config, alert.detector).action)

    async def __call__(self, alerts: list[Alert], group_alerts: list[Alert], client: str,
                       key: str | None = None, address: str | None = None) -> None:
        """Record and act on ``alerts`` (raised by this request); 403 if ``client`` is blocked
        by them or by ``group_alerts`` (those of all its requests in the batch)."""
        is_blocked = False
        for alert in alerts:
            action = self.action(alert)
            self.raised.append(alert)
            if self.metrics is not None:
                self.metrics.alerts.labels(alert.detector).inc()
            log.warning("attack alert %s for %s after %d queries: %s", alert.detector,
                        alert.client, alert.queries, alert.detail)
            if self.audit is not None:
                self.audit.alert(alert, action, key=key, address=address)
            seconds = self.config.block_seconds_for(alert.detector)
            why = f"{alert.detector}: {alert.detail}"
            if action == "block":
                await self.flag("blocked", client, seconds, why)
                is_blocked = True
            elif action == "throttle":
                await self.flag("throttled", client, seconds, why)
        if is_blocked or any(self.action(a) == "block" for a in group_alerts):
            raise blocked()
