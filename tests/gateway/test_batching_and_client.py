"""Dynamic batching and the `HttpOracle` client."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from mlwarden.core.errors import OracleError
from mlwarden.gateway.batching import BatcherClosed, DynamicBatcher
from mlwarden.gateway.client import HttpOracle


def test_concurrent_submissions_share_forward_passes_and_get_their_own_rows():
    sizes: list[int] = []

    def double(x: torch.Tensor, items: list[tuple[object, int]]) -> list[tuple[object, object]]:
        sizes.append(len(x))
        assert sum(n for _, n in items) == len(x)
        out, start = [], 0
        for meta, n in items:
            out.append((x[start : start + n] * 2, meta))
            start += n
        return out

    async def main() -> list[torch.Tensor]:
        batcher = DynamicBatcher(double, max_batch_size=16, max_wait_ms=20)
        await batcher.start()
        inputs = [torch.full((1 + i % 3, 2), float(i)) for i in range(24)]
        outs = await asyncio.gather(*(batcher.submit(x, i) for i, x in enumerate(inputs)))
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(inputs[0])
        for i, (x, (y, meta)) in enumerate(zip(inputs, outs, strict=True)):
            assert meta == i and torch.equal(y, x * 2)
        return outs

    asyncio.run(main())
    assert sum(sizes) == sum(1 + i % 3 for i in range(24))
    assert len(sizes) < 24 and max(sizes) <= 16 + 2


def test_batches_wait_for_announced_requests_only():
    sizes: list[int] = []

    def ident(x: torch.Tensor, items: list[tuple[object, int]]) -> list[object]:
        sizes.append(len(x))
        return [meta for meta, _ in items]

    async def main() -> None:
        # a long max_wait: a batcher on a timer would hold a lone request for 2 s
        batcher = DynamicBatcher(ident, max_batch_size=16, max_wait_ms=2000, in_thread=False)
        await batcher.start()
        x = torch.zeros(1, 2)
        # nobody else is on the way: the request runs alone, at once
        assert await asyncio.wait_for(batcher.submit(x, "alone"), 1.0) == "alone"
        # a request announced while the first waits joins its batch when it arrives
        arrival = batcher.expect()
        first = asyncio.create_task(batcher.submit(x, "a"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(x, "b", arrival))
        assert await asyncio.wait_for(asyncio.gather(first, second), 1.0) == ["a", "b"]
        # an announced request that is refused before submitting releases the batch
        arrival = batcher.expect()
        third = asyncio.create_task(batcher.submit(x, "c"))
        await asyncio.sleep(0.05)
        arrival.done()
        arrival.done()  # idempotent: a refusal path may call it again
        assert await asyncio.wait_for(third, 1.0) == "c"
        await batcher.close()

    asyncio.run(main())
    assert sizes == [1, 2, 1]


def test_gateway_batches_concurrent_http_requests(gateway_config, start_gateway, keys,
                                                  digits_split, digits_cnn):
    import httpx

    srv = start_gateway(gateway_config(batching={"max_wait_ms": 20}))
    state = srv.server.config.app.state.gateway
    x = digits_split[1].x[:32]
    answers: dict[int, int] = {}

    def ask(i: int) -> None:
        with httpx.Client(timeout=30) as c:
            r = c.post(f"{srv.url}/v1/predict", json={"inputs": x[i : i + 1].tolist()},
                       headers={"X-API-Key": keys["labels"].api_key})
            answers[i] = r.json()["predictions"][0]["label"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [answers[i] for i in range(32)] == digits_cnn.predict(x).tolist()
    assert state.batcher.batches < 32


def test_http_oracle_waits_on_429_then_succeeds(gateway_config, start_gateway, keys,
                                                digits_split, digits_spec):
    srv = start_gateway(gateway_config(rate_limit={"per_key_burst": "2/second"}))
    x = digits_split[1].x[:6]
    with HttpOracle(srv.url, keys["full"].api_key, digits_spec, batch_size=2,
                    max_retries=5) as patient:
        probs = patient(x)
        assert probs.shape == (6, 10) and patient.requests > 3  # some requests were retried
    with HttpOracle(srv.url, keys["full"].api_key, digits_spec, batch_size=2,
                    max_retries=0) as hasty:
        with pytest.raises(OracleError, match="429"):
            hasty(x)


def test_http_oracle_decodes_each_output_level(gateway_config, start_gateway, keys,
                                               digits_split, digits_spec, digits_cnn):
    srv = start_gateway(gateway_config())
    x = digits_split[1].x[:8]
    labels = digits_cnn.predict(x)
    with HttpOracle(srv.url, keys["labels"].api_key, digits_spec, output="labels") as o:
        assert torch.equal(o(x), labels) and o.queries == 8
    with HttpOracle(srv.url, keys["labels"].api_key, digits_spec) as o:
        with pytest.raises(OracleError, match="only receives labels"):
            o(x)
    with HttpOracle(srv.url, keys["topk"].api_key, digits_spec) as o:
        p = o(x)
        assert torch.equal(p.argmax(1), labels)
        assert torch.allclose(p.sum(1), torch.ones(8), atol=1e-4)
    with HttpOracle(srv.url, "mlw_nobody00_secret", digits_spec) as o:
        with pytest.raises(OracleError, match="401.*missing or invalid API key"):
            o(x)
    with HttpOracle("http://127.0.0.1:9", keys["full"].api_key, digits_spec, timeout=2) as o:
        with pytest.raises(OracleError, match="unreachable"):
            o(x)
