"""PRADA and stateful query detection on tensors, without HTTP."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import ParameterError
from mlwarden.gateway.monitoring import (
    ExtractionDetector,
    MonitorBank,
    QueryAttackDetector,
    calibrate_knn_threshold,
)


def _synthetic(seeds: torch.Tensor, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    out, frontier = [], seeds
    while sum(len(o) for o in out) < n:
        step = 0.1 * torch.sign(torch.randn(frontier.shape, generator=g))
        frontier = (frontier + step).clamp(0, 1)
        out.append(frontier)
    return torch.cat(out)[:n]


def _stream(det: ExtractionDetector, x: torch.Tensor, labels: torch.Tensor) -> int | None:
    for i in range(0, len(x), 10):
        det.update(x[i : i + 10], labels[i : i + 10])
        if det.is_attack():
            return det.queries_
    return None


def test_prada_flags_synthetic_queries_not_natural_ones(digits_cnn, digits_split):
    test = digits_split[1]
    natural = ExtractionDetector()
    assert _stream(natural, test.x, digits_cnn.predict(test.x)) is None
    assert natural.last_w_ is not None and natural.last_w_ > natural.delta
    syn = _synthetic(test.x[:10], 600)
    caught = _stream(ExtractionDetector(), syn, digits_cnn.predict(syn))
    assert caught is not None and caught < 1000


def test_exact_repeats_do_not_count_as_attack(digits_cnn, digits_split):
    x = digits_split[1].x[:150]
    twice = torch.cat([x, x])
    assert _stream(ExtractionDetector(), twice, digits_cnn.predict(twice)) is None


def test_ood_rate_signal():
    det = ExtractionDetector(max_ood_rate=0.25, ood_min_samples=50)
    x = torch.rand(60, 4)
    det.update(x[:40], torch.zeros(40, dtype=torch.long), torch.ones(40, dtype=torch.bool))
    assert not det.is_attack()  # not enough evidence yet
    det.update(x[40:], torch.zeros(20, dtype=torch.long), torch.zeros(20, dtype=torch.bool))
    assert det.is_attack() and "out of distribution" in (det.evidence() or "")


def test_query_attack_detector_counts_near_duplicates(digits_split):
    train, test = digits_split
    threshold = calibrate_knn_threshold(train.x, k=10)
    honest = QueryAttackDetector(threshold, k=10, hits_to_alert=25)
    honest.update(test.x)
    assert not honest.is_attack() and honest.hits_ < 25
    probe = QueryAttackDetector(threshold, k=10, hits_to_alert=25)
    g = torch.Generator().manual_seed(0)
    start = test.x[:1]
    probes = (start + 0.02 * torch.randn(60, 1, 8, 8, generator=g)).clamp(0, 1)
    probe.update(probes)
    assert probe.is_attack() and probe.hits_ >= 40
    assert len(probe.buffer_) == 60  # type: ignore[arg-type]
    small = QueryAttackDetector(threshold, k=2, history=20)
    small.update(probes)
    assert len(small.buffer_) == 20  # bounded history  # type: ignore[arg-type]


def test_monitor_bank_alerts_once_and_evicts_old_clients():
    bank = MonitorBank(extraction={"max_ood_rate": 0.2, "ood_min_samples": 20},
                       query_attack=None, max_clients=2)
    x = torch.rand(30, 4)
    labels = torch.zeros(30, dtype=torch.long)
    ood = torch.ones(30, dtype=torch.bool)
    first = bank.observe("a", x, labels, ood)
    assert [a.detector for a in first] == ["extraction"] and first[0].client == "a"
    assert bank.observe("a", x, labels, ood) == []
    bank.observe("b", x[:1], labels[:1])
    bank.observe("c", x[:1], labels[:1])
    assert "a" not in bank._clients and len(bank._clients) == 2


def test_parameters_are_validated():
    with pytest.raises(ParameterError, match="delta"):
        ExtractionDetector(delta=1.5)
    with pytest.raises(ParameterError, match="threshold"):
        QueryAttackDetector(0.0)
