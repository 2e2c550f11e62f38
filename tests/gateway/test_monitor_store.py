"""The shared monitor log: banks that share one detect exactly as one bank fed everything."""

from __future__ import annotations

import logging

import pytest
import torch

from mlwarden.core.errors import DataError
from mlwarden.gateway.errors import GatewayError
from mlwarden.gateway.monitor_store import (
    MemoryMonitorStore,
    RedisMonitorStore,
    decode_entry,
    encode_entry,
    encode_reset,
    row_digests,
)
from mlwarden.gateway.monitoring import MonitorBank

EXTRACTION = {"delta": 0.9, "min_samples": 20, "window": 60, "max_growing_set": 200,
              "max_ood_rate": 0.25, "ood_min_samples": 10}
QUERY_ATTACK = {"threshold": 0.5, "k": 5, "history": 100, "hits_to_alert": 10}


def probing_stream(batches: int = 45, seed: int = 0):
    """Batches of 5: small steps around one point (a decision-based attack's probes),
    uniform noise every third batch (a knockoff's), a few repeats; random labels and OOD."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 64, generator=gen)
    for i in range(batches):
        if i % 3:
            x = (base + 0.01 * torch.randn(5, 64, generator=gen)).clamp(0, 1)
        else:
            x = torch.rand(5, 64, generator=gen)
        if i % 7 == 6:
            x[1] = x[0]  # an exact repeat inside the batch
        yield x, torch.randint(0, 3, (5,), generator=gen), torch.rand(5, generator=gen) < 0.1


def alerts_of(banks: list[MonitorBank], client: str = "c") -> list[tuple[int, str, int, str]]:
    """(batch, detector, queries, evidence) of every alert, the batches dealt round-robin."""
    out = []
    for i, (x, labels, ood) in enumerate(probing_stream()):
        for a in banks[i % len(banks)].observe(client, x, labels, ood):
            out.append((i, a.detector, a.queries, a.detail))
    return out


def bank(store=None, **query_attack) -> MonitorBank:
    return MonitorBank(extraction=EXTRACTION if not query_attack else None,
                       query_attack={**QUERY_ATTACK, **query_attack}, store=store)


def test_two_banks_sharing_a_log_raise_the_alerts_of_one_bank():
    one = alerts_of([bank()])
    assert {a[1] for a in one} == {"extraction", "query_attack"} and len(one) > 6
    store = MemoryMonitorStore()
    assert alerts_of([bank(store), bank(store)]) == one
    assert alerts_of([bank(store) for _ in range(3)], client="d") == one
    # what the log buys: two banks on their own see half each and alert later, or less
    alone = alerts_of([bank(), bank()])
    assert alone != one and len(alone) < len(one)


def test_entries_round_trip_exactly_and_foreign_bytes_are_refused():
    x = torch.rand(3, 1, 8, 8)
    labels, ood = torch.tensor([1, 0, 9]), torch.tensor([True, False, True])
    entry = decode_entry(encode_entry(x, labels, ood, row_digests(x)))
    assert torch.equal(entry.features, x.flatten(1)) and torch.equal(entry.labels, labels)
    assert torch.equal(entry.ood, ood) and entry.digests == row_digests(x) and not entry.reset
    assert len(encode_entry(x, labels, None, row_digests(x))) == 10 + 3 * (4 + 16 + 4 * 64)
    assert decode_entry(encode_reset()).reset
    with pytest.raises(DataError, match="version"):
        decode_entry(b"\x09" + encode_reset()[1:])
    with pytest.raises(DataError, match="bytes"):
        decode_entry(encode_entry(x, labels, ood, row_digests(x))[:-4])
    # texts are told apart by their text, not by their embedding's bits
    assert row_digests(x[:2], ["a", "a"])[0] == row_digests(x[2:], ["a"])[0]


def test_redis_log_matches_one_bank_and_is_bounded_and_expiring(redis_url):
    import redis

    one = alerts_of([bank()])
    store = RedisMonitorStore(redis_url, "mlw-store-test", max_entries=200, ttl_seconds=120)
    assert alerts_of([bank(store), bank(store)], client="rr") == one
    conn = redis.Redis.from_url(redis_url)
    stream, counter = store.keys("rr")
    assert conn.xlen(stream) == 45 and int(conn.get(counter)) == 45
    assert 0 < conn.ttl(stream) <= 120 and 0 < conn.ttl(counter) <= 120
    small = RedisMonitorStore(redis_url, "mlw-store-test", max_entries=10, ttl_seconds=120)
    for i in range(300):
        small.append("bounded", encode_reset(), i)
    # MAXLEN ~ trims whole macro nodes (100 entries): bounded, never below the limit
    assert 10 <= conn.xlen(small.keys("bounded")[0]) <= 110


def test_a_reset_on_one_replica_resets_the_client_on_all(redis_url):
    store = RedisMonitorStore(redis_url, "mlw-store-reset")
    a, b = bank(store, hits_to_alert=1000), bank(store, hits_to_alert=1000)  # no alert resets
    stream = list(probing_stream(6))
    for i, (x, labels, ood) in enumerate(stream[:4]):
        (a, b)[i % 2].observe("c", x, labels, ood)
    b.observe("c", *stream[4])
    assert b._clients["c"].query_attack.queries_ == 25
    a.reset("c")  # a block was lifted through replica a's admin route
    b.observe("c", *stream[5])
    assert b._clients["c"].query_attack.queries_ == 5  # only what came after the reset
    a.observe("c", *stream[0])
    assert a._clients["c"].query_attack.queries_ == 10
    # `mlwarden gateway blocks lift` with Redis storage: no replica involved
    RedisMonitorStore(redis_url, "mlw-store-reset").reset("c")
    a.observe("c", *stream[1])
    assert a._clients["c"].query_attack.queries_ == 5


def test_a_replica_that_missed_trimmed_batches_rebuilds_and_says_so(redis_url, caplog):
    store = RedisMonitorStore(redis_url, "mlw-store-gap", max_entries=1)
    a, b = bank(store), bank(store)
    stream = list(probing_stream(300))
    b.observe("c", *stream[0])
    for item in stream[1:299]:
        a.observe("c", *item)
    with caplog.at_level(logging.WARNING, logger="mlwarden.gateway"):
        b.observe("c", *stream[299])
    assert "rebuilt from the" in caplog.text
    assert b._clients["c"].seq == 300


def test_unreachable_redis_fails_closed_with_a_503():
    from mlwarden.gateway.server import free_port

    store = RedisMonitorStore(f"redis://127.0.0.1:{free_port()}", "x")
    assert not store.ping()
    with pytest.raises(GatewayError) as err:
        bank(store).observe("c", *next(probing_stream(1)))
    assert err.value.status == 503 and "unreachable" in err.value.message


def test_the_app_shares_its_monitors_when_they_live_in_redis(gateway_config, digits_cnn,
                                                             validator, redis_url):
    from mlwarden.gateway.app import create_app

    def store_of(**overrides):
        app = create_app(digits_cnn, gateway_config(**overrides), validator=validator)
        return app.state.gateway.monitors.store

    assert store_of() is None  # memory://: today's in-process monitors, no log at all
    assert isinstance(store_of(rate_limit={"storage": redis_url}), RedisMonitorStore)
    assert store_of(rate_limit={"storage": redis_url}, monitoring={"storage": "memory://"}) is None
    shared = store_of(monitoring={"storage": redis_url, "shared_entries": 50,
                                  "shared_ttl_seconds": 60})
    assert isinstance(shared, RedisMonitorStore)
    assert (shared.max_entries, shared.ttl_seconds) == (50, 60)
