"""Dynamic batching: concurrent requests share one forward pass after a bounded wait.

Why: a forward pass on a batch of 32 costs far less than 32 passes of one, and the event
loop keeps accepting requests while the model runs in its worker thread, so the next
batch fills up during the current pass. A request waits at most ``max_wait_ms`` for
company (the classic dynamic batcher of TensorFlow Serving and Triton), and only for
company that is already on its way: the app announces each request as it starts reading
it (`DynamicBatcher.expect`), and the batcher runs as soon as no announced request is
still being read. A fixed timer instead leaves the CPU idle whenever the server has
nothing left to parse, and adds its whole wait to every request at low load.

`BatchWorker` is what the gateway's batcher runs: the batch step of every request in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from mlwarden.defenses.output import labels_only

if TYPE_CHECKING:
    from mlwarden.defenses.output import Released
    from mlwarden.gateway.monitoring import Alert, MonitorBank

Outputs = Any
BatchFn = Callable[[torch.Tensor, list[tuple[Any, int]]], list[Any]]


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class Arrival:
    """One announced request; `done` when it is queued or will never be (idempotent)."""

    def __init__(self, batcher: DynamicBatcher) -> None:
        self._batcher: DynamicBatcher | None = batcher
        batcher._arriving += 1

    def done(self) -> None:
        if self._batcher is not None:
            self._batcher._arriving -= 1
            self._batcher._poke()
            self._batcher = None


class DynamicBatcher:
    """Queue inputs, run ``fn`` on concatenated batches in one worker thread, split results.

    ``fn(batch, items)`` gets the concatenated (N, ...) tensor and, per submitted item, its
    ``(meta, rows)``; it returns one result per item, in order. Per-request work that is
    cheaper in bulk (the attack monitors) rides along in the same call.
    """

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
        on_batch: Callable[[int], None] | None = None,
        in_thread: bool = True,
    ) -> None:
        self.fn = fn
        self.in_thread = in_thread
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.enabled = enabled
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlwarden-model")
        self._queue: asyncio.Queue[tuple[torch.Tensor, Any, asyncio.Future[Outputs]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._arriving = 0
        self._arrived: asyncio.Event | None = None
        self.batches = 0

    @property
    def running(self) -> bool:
        return not self._closed and (not self.enabled or self._worker is not None)

    async def start(self) -> None:
        if self.enabled and self._worker is None:
            self._queue = asyncio.Queue()
            self._arrived = asyncio.Event()
            self._worker = asyncio.create_task(self._loop(), name="mlwarden-batcher")

    def expect(self) -> Arrival:
        """Announce a request that will probably `submit` soon (call ``done`` if it won't)."""
        return Arrival(self)

    def _poke(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    async def submit(self, x: torch.Tensor, meta: Any = None,
                     arrival: Arrival | None = None) -> Outputs:
        if arrival is not None:
            arrival.done()
        if self._closed:
            raise BatcherClosed("the gateway is shutting down")
        loop = asyncio.get_running_loop()
        if not self.enabled or self._queue is None:
            if not self.in_thread:
                return self._run(x, [(meta, len(x))])[0]
            out = await loop.run_in_executor(self._executor, self._run, x, [(meta, len(x))])
            return out[0]
        fut: asyncio.Future[Outputs] = loop.create_future()
        self._queue.put_nowait((x, meta, fut))
        self._poke()
        return await fut

    def _run(self, x: torch.Tensor, items: list[tuple[Any, int]]) -> list[Outputs]:
        if self.on_batch is not None:
            self.on_batch(len(x))
        self.batches += 1
        return self.fn(x, items)

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            first = await queue.get()
            pending = [first]
            size = len(first[0])
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch_size:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if self._arriving <= 0:
                        # Two turns of the loop: the first reads what sits in the sockets,
                        # the second starts those requests (they announce themselves).
                        await asyncio.sleep(0)
                        await asyncio.sleep(0)
                        if self._arriving <= 0 and queue.empty():
                            break  # nobody else is on the way: run now
                        continue
                    assert self._arrived is not None
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), left)
                    except TimeoutError:
                        break
                    continue
                pending.append(item)
                size += len(item[0])
            await self._dispatch(loop, pending)

    async def _dispatch(
        self, loop: asyncio.AbstractEventLoop,
        pending: Sequence[tuple[torch.Tensor, Any, asyncio.Future[Outputs]]],
    ) -> None:
        live = [p for p in pending if not p[2].cancelled()]
        if not live:
            return
        batch: Any = live[0][0]
        if len(live) > 1:  # tensors (a tensor model) or lists of texts (a text model)
            batch = (torch.cat([p[0] for p in live]) if isinstance(batch, torch.Tensor)
                     else [row for p in live for row in p[0]])
        items = [(meta, len(x)) for x, meta, _ in live]
        try:
            if self.in_thread:
                outs = await loop.run_in_executor(self._executor, self._run, batch, items)
            else:
                outs = self._run(batch, items)
        except Exception as exc:  # hand the error to every waiting request
            for _, _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), out in zip(live, outs, strict=True):
            if not fut.done():
                fut.set_result(out)

    async def close(self) -> None:
        """Stop taking work, finish what is queued, stop the worker thread."""
        self._closed = True
        if self._worker is not None and self._queue is not None:
            loop = asyncio.get_running_loop()
            rest = []
            while not self._queue.empty():
                rest.append(self._queue.get_nowait())
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
            if rest:
                await self._dispatch(loop, rest)
        self._executor.shutdown(wait=True)


# -- the gateway's batch step -------------------------------------------------------------


class Ticket(NamedTuple):
    """What a request submits with its inputs: whose they are and what it may see."""

    client: str
    output: str  # an output level of `mlwarden.defenses.output.release`


@dataclass
class BatchAnswer:
    """What the batch worker hands back to one request, as Python lists."""

    labels: list[int]
    probabilities: list[list[float]] | None  # at the request's output level; None if hidden
    top_k: tuple[list[list[float]], list[list[int]]] | None  # (values, labels) per sample
    ood: list[bool] | None  # the OOD validator's flag per sample, when one runs
    alerts: list[Alert]  # alerts this request raised (first request of its client in the batch)
    group_alerts: list[Alert]  # alerts of its client's whole group in the batch


class BatchStep:
    """What follows the forward pass of a batch: OOD verdicts, attack monitors and output
    hardening, then one `BatchAnswer` per request, in arrival order.

    Everything is done once per batch, not once per request: the monitors per client, the
    hardening per output level, and the conversion to Python lists, which a dozen small
    tensor operations per request would otherwise cost. `BatchWorker` (tensors) and
    `mlwarden.gateway.text.TextBatchWorker` (texts) run their model, then `answer`.

    ``ood_threshold``: scores above it are out of distribution; ``harden``: (probabilities,
    level) -> `Released`, e.g. `mlwarden.defenses.output.release` with the settings bound.
    """

    def __init__(
        self, monitors: MonitorBank, harden: Callable[[torch.Tensor, str], Released], *,
        ood_threshold: float | None = None,
    ) -> None:
        self.monitors = monitors
        self.harden = harden
        self.ood_threshold = ood_threshold

    def answer(
        self, features: torch.Tensor, probs: torch.Tensor, scores: torch.Tensor | None,
        items: list[tuple[Ticket, int]], repeat_keys: Sequence[object] | None = None,
    ) -> list[BatchAnswer]:
        """The answers of a batch whose forward pass gave ``probs`` and OOD ``scores``;
        ``features`` (N, ...) are what the attack monitors compare (the inputs of a tensor
        model, the sentence embeddings of a text model), ``repeat_keys`` what tells their
        exact repeats apart (default: the bytes of each row of ``features``)."""
        labels = labels_only(probs)
        flagged = (scores > self.ood_threshold
                   if scores is not None and self.ood_threshold is not None else None)
        label_list = labels.tolist()
        flag_list = flagged.tolist() if flagged is not None else None
        alerts_of = self.monitors.observe_batch(features, labels, flagged,
                                                [(t.client, n) for t, n in items],
                                                repeat_keys=repeat_keys)
        released = self._release(probs, items)
        out, start, seen = [], 0, set()
        for (ticket, n), (rows, top) in zip(items, released, strict=True):
            end = start + n
            group = alerts_of[ticket.client]
            first = ticket.client not in seen
            seen.add(ticket.client)
            out.append(BatchAnswer(
                labels=label_list[start:end], probabilities=rows, top_k=top,
                ood=flag_list[start:end] if flag_list is not None else None,
                alerts=group if first else [], group_alerts=group))
            start = end
        return out

    def _release(self, probs: torch.Tensor, items: list[tuple[Ticket, int]]) -> list[Any]:
        """(probability rows, top-k rows) per request: one `harden` call per output level."""
        levels = {t.output for t, _ in items}
        out: list[Any] = [None] * len(items)
        starts, start = [], 0
        for _, n in items:
            starts.append(start)
            start += n
        for level in levels:
            mine = [i for i, (t, _) in enumerate(items) if t.output == level]
            if len(levels) == 1:
                sub = probs
            else:
                rows = [r for i in mine for r in range(starts[i], starts[i] + items[i][1])]
                sub = probs[torch.tensor(rows)]
            rel = self.harden(sub, level)
            p_rows = rel.probabilities.tolist() if rel.probabilities is not None else None
            top = (rel.top_k[0].tolist(), rel.top_k[1].tolist()) if rel.top_k is not None else None
            at = 0
            for i in mine:
                end = at + items[i][1]
                out[i] = (p_rows[at:end] if p_rows is not None else None,
                          (top[0][at:end], top[1][at:end]) if top is not None else None)
                at = end
        return out


class BatchWorker(BatchStep):
    """The batch step of a tensor model: its forward pass, then `BatchStep.answer`.

    Runs in the batcher's worker (thread). ``model``: (N, ...) -> (probabilities, OOD
    scores or None), e.g. `ModelRunner`; the monitors compare the inputs themselves.
    """

    def __init__(
        self, model: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
        monitors: MonitorBank, harden: Callable[[torch.Tensor, str], Released], *,
        ood_threshold: float | None = None,
    ) -> None:
        super().__init__(monitors, harden, ood_threshold=ood_threshold)
        self.model = model

    def __call__(self, x: torch.Tensor, items: list[tuple[Ticket, int]]) -> list[BatchAnswer]:
        probs, scores = self.model(x)
        return self.answer(x, probs, scores, items)
