"""Every refusal is audited with the key that made it; blocks are configured per monitor,
listed and lifted with `mlwarden gateway blocks`; retries are not an attack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mlwarden.gateway.auth import generate_key


def bearer(key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.api_key}"}


def _audit(state: Any) -> list[dict[str, Any]]:
    state.audit.flush()
    return [json.loads(line) for line in state.audit.path.read_text().splitlines()]


def _probes(digits_split: Any, n: int = 60) -> torch.Tensor:
    """Near-duplicates of one digit: what a decision-based attack sends."""
    g = torch.Generator().manual_seed(0)
    start = digits_split[1].x[:1]
    return (start + 0.02 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)


def _block_by_probing(client: Any, url: str, key: Any, digits_split: Any) -> None:
    probes = _probes(digits_split)
    for i in range(0, len(probes), 10):
        r = client.post(f"{url}/v1/predict", json={"inputs": probes[i:i + 10].tolist()},
                        headers=bearer(key))
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "blocked"
            return
        assert r.status_code == 200, r.text
    raise AssertionError("the probes were not blocked")


def test_refusals_are_audited_with_the_key_id_and_endpoint(gateway_config, start_gateway,
                                                           client, keys, digits_split):
    srv = start_gateway(gateway_config())
    state = srv.server.config.app.state.gateway
    one = {"inputs": digits_split[1].x[:1].tolist()}
    assert client.post(f"{srv.url}/v1/predict", json=one,
                       headers=bearer(keys["metrics_only"])).status_code == 403
    assert client.get(f"{srv.url}/metrics", headers=bearer(keys["labels"])).status_code == 403
    assert client.get(f"{srv.url}/metrics").status_code == 401
    assert client.get(f"{srv.url}/metrics", headers=bearer(keys["full"])).status_code == 200
    refusals = [e for e in _audit(state) if e["event"] == "refuse"]
    assert [(e["endpoint"], e["status"], e["reason"], e["key"]) for e in refusals] == [
        ("/v1/predict", 403, "forbidden", keys["metrics_only"].entry.prefix),
        ("/metrics", 403, "forbidden", keys["labels"].entry.prefix),
        ("/metrics", 401, "unauthorized", None),
    ]
    assert "'predict' scope" in refusals[0]["detail"]
    assert all(e["address"] == "127.0.0.1" for e in refusals)


def test_a_client_retrying_one_request_100_times_is_not_blocked(gateway_config, start_gateway,
                                                                client, keys, digits_split):
    srv = start_gateway(gateway_config())
    state = srv.server.config.app.state.gateway
    body = {"inputs": digits_split[1].x[:2].tolist()}
    codes = [client.post(f"{srv.url}/v1/predict", json=body,
                         headers=bearer(keys["rounded"])).status_code for _ in range(100)]
    assert codes == [200] * 100 and state.alerts == []
    qa = state.monitors._clients[keys["rounded"].entry.prefix].query_attack
    assert qa.queries_ == 2 and qa.hits_ == 0  # the repeats never reached the monitors
    # a probe that is not an exact repeat is still caught at once
    _block_by_probing(client, srv.url, keys["rounded"], digits_split)
    assert [a.detector for a in state.alerts] == ["query_attack"]


def test_block_durations_are_per_monitor(gateway_config, start_gateway, client, keys,
                                         digits_split):
    srv = start_gateway(gateway_config(monitoring={"query_attack": {"block_seconds": 30},
                                                   "block_seconds": 7200}))
    state = srv.server.config.app.state.gateway
    _block_by_probing(client, srv.url, keys["rounded"], digits_split)
    (block,) = state.flags.blocks()
    assert block.kind == "blocked" and block.client == keys["rounded"].entry.prefix
    assert 25 <= block.seconds_left <= 30 and block.reason.startswith("query_attack: ")
    assert state.config.monitoring.block_seconds_for("extraction") == 7200


def test_failed_authentications_block_the_address(gateway_config, start_gateway, client, keys,
                                                  digits_split):
    srv = start_gateway(gateway_config(monitoring={"failed_auth": {"max_failures": 5,
                                                                   "block_seconds": 60}}))
    state = srv.server.config.app.state.gateway
    one = {"inputs": digits_split[1].x[:1].tolist()}
    wrong = {"X-API-Key": f"mlw_{keys['full'].entry.prefix}_guess"}
    codes = [client.post(f"{srv.url}/v1/predict", json=one, headers=wrong).status_code
             for _ in range(6)]
    assert codes == [401] * 4 + [403, 403]
    # the blocked address gets the same 403 with a right key: a block tells a guesser nothing
    right = client.post(f"{srv.url}/v1/predict", json=one, headers=bearer(keys["full"]))
    assert right.status_code == 403 and right.json()["error"]["code"] == "blocked"
    (block,) = state.flags.blocks()
    assert block.client == "addr:127.0.0.1" and block.seconds_left <= 60
    alerts = [e for e in _audit(state) if e["event"] == "alert"]
    assert [(a["detector"], a["action"], a["address"]) for a in alerts] == [
        ("failed_auth", "block", "127.0.0.1")]
    assert state.flags.lift("addr:127.0.0.1") == ["blocked"]
    assert client.post(f"{srv.url}/v1/predict", json=one,
                       headers=bearer(keys["full"])).status_code == 200


@pytest.mark.redis
def test_a_blocked_key_is_lifted_with_the_command_redis(redis_url, gateway_config,
                                                        start_gateway, client, keys,
                                                        digits_split, cli):
    import redis

    redis.Redis.from_url(redis_url).flushall()
    srv = start_gateway(gateway_config(rate_limit={"storage": redis_url}))
    key = keys["topk"]
    _block_by_probing(client, srv.url, key, digits_split)
    one = {"inputs": digits_split[1].x[5:6].tolist()}
    assert client.post(f"{srv.url}/v1/predict", json=one, headers=bearer(key)).status_code == 403
    listed = cli("gateway", "blocks", "list", "--storage", redis_url)
    assert listed.code == 0, listed.err
    assert key.entry.prefix in listed.out and "query_attack" in listed.out
    lifted = cli("gateway", "blocks", "lift", key.entry.prefix, "--storage", redis_url)
    assert lifted.code == 0 and f"lifted blocked for {key.entry.prefix}" in lifted.out
    assert client.post(f"{srv.url}/v1/predict", json=one, headers=bearer(key)).status_code == 200
    assert "no blocked" in cli("gateway", "blocks", "list", "--storage", redis_url).out
    again = cli("gateway", "blocks", "lift", key.entry.prefix, "--storage", redis_url)
    assert again.code != 0 and "neither blocked nor throttled" in again.err


def test_a_blocked_key_is_lifted_with_the_command_memory(gateway_config, start_gateway, client,
                                                         keys, digits_split, cli,
                                                         monkeypatch, tmp_path: Path):
    admin = generate_key("admin", ("admin",))
    cfg = gateway_config()
    cfg.auth.keys.append(admin.entry)
    srv = start_gateway(cfg)
    state = srv.server.config.app.state.gateway
    key = keys["labels"]
    _block_by_probing(client, srv.url, key, digits_split)
    monkeypatch.delenv("MLWARDEN_ADMIN_KEY", raising=False)
    nokey = cli("gateway", "blocks", "list", "--url", srv.url)
    assert nokey.code != 0 and "MLWARDEN_ADMIN_KEY" in nokey.err
    monkeypatch.setenv("MLWARDEN_ADMIN_KEY", key.api_key)  # a predict key is not an admin
    refused = cli("gateway", "blocks", "list", "--url", srv.url)
    assert refused.code != 0 and "403" in refused.err
    monkeypatch.setenv("MLWARDEN_ADMIN_KEY", admin.api_key)
    listed = cli("gateway", "blocks", "list", "--url", srv.url)
    assert listed.code == 0 and key.entry.prefix in listed.out, listed.err
    lifted = cli("gateway", "blocks", "lift", key.entry.prefix, "--url", srv.url)
    assert lifted.code == 0 and "lifted blocked" in lifted.out, lifted.err
    one = {"inputs": digits_split[1].x[5:6].tolist()}
    assert client.post(f"{srv.url}/v1/predict", json=one, headers=bearer(key)).status_code == 200
    entries = _audit(state)
    (lift,) = [e for e in entries if e["event"] == "lift"]
    assert lift["key"] == admin.entry.prefix and lift["client"] == key.entry.prefix
    assert any(e["event"] == "refuse" and e["endpoint"] == "/v1/admin/blocks"
               and e["key"] == key.entry.prefix for e in entries)
    # probing again after the lift needs fresh evidence, and is caught again
    _block_by_probing(client, srv.url, key, digits_split)


def test_repeat_filter_forgets_beyond_its_window_and_alerts_start_over(digits_split):
    from mlwarden.gateway.monitoring import MonitorBank, RepeatFilter

    rows = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    f = RepeatFilter(window=2)
    assert f.novel(torch.cat([rows[:2], rows[:1]])) == [0, 1]  # a repeat inside one batch
    assert f.novel(rows[:2]) == []
    assert f.novel(rows[2:]) == [0]  # the third distinct row pushes the first out
    assert f.novel(rows[:1]) == [0]  # forgotten, so novel again
    assert f.novel(rows[2:]) == []  # still remembered
    assert RepeatFilter(window=0).novel(torch.cat([rows, rows])) == list(range(6))
    bank = MonitorBank(extraction={"max_ood_rate": 0.2, "ood_min_samples": 20},
                       query_attack=None)
    x = torch.rand(60, 4, generator=torch.Generator().manual_seed(1))
    zeros, ood = torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.bool)
    assert [a.detector for a in bank.observe("c", x[:20], zeros, ood)] == ["extraction"]
    # the detector started over: the next alert needs 20 new out-of-distribution queries
    assert bank.observe("c", x[20:39], zeros[:19], ood[:19]) == []
    assert [a.queries for a in bank.observe("c", x[39:40], zeros[:1], ood[:1])] == [20]


@pytest.mark.redis
def test_flags_in_redis_keep_reasons_count_failures_and_lift(redis_url):
    import redis

    from mlwarden.gateway.ratelimit import ClientFlags

    redis.Redis.from_url(redis_url).flushall()
    flags = ClientFlags(redis_url, "unit")
    flags.set("blocked", "KeyA1234", 60, "query_attack: 25 queries")
    flags.set("throttled", "KeyA1234", 30, "extraction: W=0.8")
    flags.set("blocked", "addr:10.0.0.1", 10, "failed_auth: 50")
    listed = flags.blocks()
    assert [(b.kind, b.client) for b in listed] == [
        ("blocked", "KeyA1234"), ("throttled", "KeyA1234"), ("blocked", "addr:10.0.0.1")]
    assert listed[0].reason == "query_attack: 25 queries" and 55 <= listed[0].seconds_left <= 60
    assert flags.blocked_throttled("KeyB5678", "10.0.0.1") == (True, False)  # its address
    assert flags.blocked_throttled("KeyA1234", "10.0.0.2") == (True, True)
    assert ClientFlags(redis_url, "other").blocks() == []  # another gateway's prefix
    assert flags.lift("KeyA1234") == ["blocked", "throttled"] and flags.lift("KeyA1234") == []
    assert [flags.count("failed_auth", "addr:x", 60) for _ in range(3)] == [1, 2, 3]
    assert redis.Redis.from_url(redis_url).ttl("unit:count:failed_auth:addr:x") > 0


def test_admin_routes_refuse_without_auth(gateway_config, start_gateway, client):
    srv = start_gateway(gateway_config(auth={"enabled": False}))
    r = client.get(f"{srv.url}/v1/admin/blocks")
    assert r.status_code == 403 and "need [gateway.auth] enabled" in r.json()["error"]["message"]
    assert client.delete(f"{srv.url}/v1/admin/blocks/addr:127.0.0.1").status_code == 403
    bad = client.delete(f"{srv.url}/v1/admin/blocks/no%20such%20client")
    assert bad.status_code == 422
