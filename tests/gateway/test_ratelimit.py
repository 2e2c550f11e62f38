"""Rate limits over real HTTP: exact across two replicas sharing a real redis-server."""

from __future__ import annotations

import pytest
import torch

from mlwarden.gateway.config import RateLimitConfig
from mlwarden.gateway.ratelimit import RateLimiter


def bearer(key) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {key.api_key}"}


ONE = {"inputs": torch.zeros(1, 1, 8, 8).tolist()}


@pytest.mark.redis
def test_limit_holds_exactly_across_two_replicas_sharing_redis(
    redis_url, gateway_config, start_gateway, client, keys
):
    import redis

    redis.Redis.from_url(redis_url).flushall()
    limits = {"storage": redis_url, "per_key": "12/minute", "per_key_burst": None,
              "per_address": None, "per_address_burst": None, "key_prefix": "exact"}
    cfg = gateway_config(rate_limit=limits, monitoring={"extraction": {"enabled": False},
                                                        "query_attack": {"enabled": False}})
    a, b = start_gateway(cfg), start_gateway(cfg)
    codes = []
    for i in range(30):
        srv = a if i % 2 == 0 else b
        r = client.post(f"{srv.url}/v1/predict", json=ONE, headers=bearer(keys["full"]))
        codes.append(r.status_code)
        if r.status_code == 429:
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert r.headers["RateLimit-Limit"] == "12"
            assert r.headers["RateLimit-Remaining"] == "0"
            assert "rate limit 'key'" in r.json()["error"]["message"]
    assert codes.count(200) == 12 and codes.count(429) == 18
    assert codes[:12] == [200] * 12
    # another key has its own budget on both replicas
    r = client.post(f"{b.url}/v1/predict", json=ONE, headers=bearer(keys["labels"]))
    assert r.status_code == 200


@pytest.mark.redis
def test_alert_block_is_shared_through_redis(redis_url, gateway_config, start_gateway, client,
                                             keys):
    cfg = gateway_config(rate_limit={"storage": redis_url, "key_prefix": "flags"})
    a, b = start_gateway(cfg), start_gateway(cfg)
    state_a = a.server.config.app.state.gateway
    state_a.flags.set("blocked", keys["full"].entry.prefix, 60)
    r = client.post(f"{b.url}/v1/predict", json=ONE, headers=bearer(keys["full"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "blocked"
    assert client.get(f"{b.url}/readyz").status_code == 200


def test_burst_and_address_limits_in_memory(gateway_config, start_gateway, client, keys):
    cfg = gateway_config(rate_limit={"per_key": "1000/minute", "per_key_burst": "5/second",
                                     "per_address": "8/minute", "per_address_burst": None})
    srv = start_gateway(cfg)
    url = f"{srv.url}/v1/predict"
    codes = [client.post(url, json=ONE, headers=bearer(keys["full"])).status_code
             for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    # a second key from the same address still meets the address limit (8 per minute)
    codes = [client.post(url, json=ONE, headers=bearer(keys["labels"])).status_code
             for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    big = {"inputs": torch.zeros(6, 1, 8, 8).tolist()}
    r = client.post(f"{srv.url}/v1/predict", json=big, headers=bearer(keys["topk"]))
    assert r.status_code == 422 and "smaller batches" in r.json()["error"]["message"]


def test_cost_is_counted_in_inputs_and_refusals_spend_nothing():
    limiter = RateLimiter(RateLimitConfig(per_key="10/minute", per_key_burst=None,
                                          per_address="100/minute", per_address_burst=None))
    assert limiter.check("k", "1.2.3.4", cost=6).allowed
    refused = limiter.check("k", "1.2.3.4", cost=5)
    assert not refused.allowed and refused.scope == "key"
    assert limiter.check("k", "1.2.3.4", cost=4).allowed  # the refused 5 were not spent
    # the address limit was charged only for allowed requests: 6 + 4 of 100
    assert limiter.check(None, "1.2.3.4", cost=90).allowed
    assert not limiter.check(None, "1.2.3.4", cost=1).allowed


def test_unauthenticated_guessing_spends_the_address_budget(gateway_config, start_gateway,
                                                            client):
    srv = start_gateway(gateway_config(rate_limit={"per_address": "3/minute",
                                                   "per_address_burst": None}))
    codes = [client.post(f"{srv.url}/v1/predict", json=ONE,
                         headers={"X-API-Key": f"mlw_guess{i:03d}_x"}).status_code
             for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_a_full_burst_on_a_fresh_client_passes_whatever_the_clock_reads(monkeypatch) -> None:
    """At this monotonic reading ``(now + 60.0) - 60.0 > now`` in floating point: the GCRA
    once refused a fresh client's full burst there (a CI flake); the burst must pass, and one
    more input must not."""
    from limits import parse

    import mlwarden.gateway.ratelimit as rl

    now = 32727.190178490167
    assert (now + 60.0) - 60.0 > now
    monkeypatch.setattr(rl.time, "monotonic", lambda: now)
    gcra = rl.GcraLimiter()
    item = parse("2/minute")
    assert gcra.check([("throttle", item, ("throttle", "t"))], 2).allowed
    assert not gcra.check([("throttle", item, ("throttle", "t"))], 1).allowed
