"""Attacks run through the real gateway over HTTP are detected; honest traffic is not."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import OracleError
from mlwarden.gateway.client import HttpOracle


def knockoff_queries(seeds: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A knockoff-style query stream: uniform random inputs interleaved with synthetic
    points grown from a few seeds by JbDA-sized steps (lambda = 0.1) in random sign
    directions (Papernot et al., 2017; Orekondy et al., 2019)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(n // 2, *seeds.shape[1:], generator=gen)
    synthetic, frontier = [], seeds
    while sum(len(s) for s in synthetic) < n - n // 2:
        step = 0.1 * torch.sign(torch.randn(frontier.shape, generator=gen))
        frontier = (frontier + step).clamp(0, 1)
        synthetic.append(frontier)
    syn = torch.cat(synthetic)[: n - n // 2]
    out = torch.empty(n, *seeds.shape[1:])
    out[0::2], out[1::2] = noise[: len(out[0::2])], syn[: len(out[1::2])]
    return out


def test_extraction_is_detected_before_1000_queries_and_honest_traffic_is_not(
    gateway_config, start_gateway, keys, digits_split, digits_spec
):
    srv = start_gateway(gateway_config())
    state = srv.server.config.app.state.gateway
    test = digits_split[1]
    # honest client: the whole test set (450 samples), batches of 10
    with HttpOracle(srv.url, keys["labels"].api_key, digits_spec, output="labels",
                    batch_size=10) as honest:
        for i in range(0, len(test), 10):
            honest(test.x[i : i + 10])
    assert state.alerts == []
    # attacker: knockoff-style stream at the same batch size until blocked
    attack = knockoff_queries(test.x[:10], 1000)
    sent = 0
    with HttpOracle(srv.url, keys["full"].api_key, digits_spec, batch_size=10) as thief:
        with pytest.raises(OracleError, match="blocked"):
            for i in range(0, len(attack), 10):
                thief(attack[i : i + 10])
                sent += 10
    alerts = [a for a in state.alerts if a.detector == "extraction"]
    assert len(alerts) == 1 and alerts[0].client == keys["full"].entry.prefix
    assert alerts[0].queries < 1000
    print(f"\nextraction detected after {alerts[0].queries} queries ({alerts[0].detail}); "
          f"honest client sent {len(test)} queries with no alert")
    # the block holds for later requests, and only for that key
    with HttpOracle(srv.url, keys["full"].api_key, digits_spec) as thief:
        with pytest.raises(OracleError, match="403"):
            thief(test.x[:1])
    with HttpOracle(srv.url, keys["labels"].api_key, digits_spec, output="labels") as honest:
        assert honest(test.x[:1]).shape == (1,)


def test_hopskipjump_through_the_gateway_is_detected(gateway_config, start_gateway, keys,
                                                     digits_split, digits_spec):
    from mlwarden.attacks.evasion.hopskipjump import HopSkipJump

    srv = start_gateway(gateway_config(monitoring={"extraction": {"action": "log"}}))
    state = srv.server.config.app.state.gateway
    x, y = digits_split[1].x[:2], digits_split[1].y[:2]
    with HttpOracle(srv.url, keys["labels"].api_key, digits_spec, output="labels",
                    batch_size=64) as oracle:
        with pytest.raises(OracleError, match="blocked"):
            HopSkipJump(norm="l2", queries=3000, max_iter=20, seed=0)(oracle, x, y)
        spent = oracle.queries
    alerts = [a for a in state.alerts if a.detector == "query_attack"]
    assert len(alerts) == 1
    assert alerts[0].queries <= spent + 64
    print(f"\nHopSkipJump detected after {alerts[0].queries} queries ({alerts[0].detail})")
