"""Dynamic batching: concurrent requests share one forward pass after a bounded wait.

Why: a forward pass on a batch of 32 costs far less than 32 passes of one, and the event
loop keeps accepting requests while the model runs in its worker thread, so the next
batch fills up during the current pass. A request waits at most ``max_wait_ms`` for
company (the classic dynamic batcher of TensorFlow Serving and Triton), and only for
company that is already on its way: the app announces each request as it starts reading
it (`DynamicBatcher.expect`), and the batcher runs as soon as no announced request is
still being read. A fixed timer instead leaves the CPU idle whenever the server has
nothing left to parse, and adds its whole wait to every request at low load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

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
        batch = torch.cat([p[0] for p in live]) if len(live) > 1 else live[0][0]
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
