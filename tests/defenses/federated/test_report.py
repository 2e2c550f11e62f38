"""Findings and table of a federation, on hand-made results (no simulation needed)."""

from __future__ import annotations

from mlwarden.defenses.federated.check import federated_report
from mlwarden.defenses.federated.clients import ModelRecipe
from mlwarden.defenses.federated.settings import FederatedSettings
from mlwarden.defenses.federated.simulation import FederatedResult, RoundMetrics, StrategyRun


def _run(strategy, attack, asr, accuracy=0.9):
    run = StrategyRun(strategy, attack)
    run.rounds = [RoundMetrics(0, 0.1, 0.1, 0.0, 0), RoundMetrics(1, accuracy, asr, 1.0, 100)]
    return run


def test_a_finding_for_each_strategy_the_backdoor_passes():
    settings = FederatedSettings(strategies=["fedavg", "krum"], malicious=0.2, max_asr=0.1)
    runs = [_run("fedavg", "none", 0.02, 0.95), _run("fedavg", "backdoor", 0.97, 0.6),
            _run("krum", "backdoor", 0.05, 0.93)]
    result = FederatedResult(settings, runs, ModelRecipe("mlp", (64,), 10), None, [1, 2], 9.0, 4.0)
    report = federated_report(result)
    assert [(f.id, f.evidence["strategy"]) for f in report.findings] == [("MLW-FED-001", "fedavg")]
    costs = {row[0]: row[3] for row in report.tables[0].rows}
    assert costs == {"fedavg (no attack)": 0.0, "fedavg": 0.35, "krum": 0.02}
    assert report.metrics["federated.fedavg.asr"] == 0.97
    assert report.metrics["federated.fedavg.no_attack.accuracy"] == 0.95


def test_no_backdoor_finding_for_other_attacks():
    settings = FederatedSettings(strategies=["fedavg"], malicious=0.2, attack="sign_flip")
    runs = [_run("fedavg", "sign_flip", 0.9)]
    result = FederatedResult(settings, runs, ModelRecipe("mlp", (64,), 10), None, [1], 1.0, 0.0)
    assert federated_report(result).findings == []
