"""The session's one Flower simulation: curves, SecAgg+, determinism, the saved model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mlwarden.defenses.federated.clients import get_weights
from mlwarden.defenses.federated.simulation import prepare


def _runs(federation):
    result, _ = federation
    return {run.label: run for run in result.runs}


def test_every_strategy_ran_every_round(federation, federated_settings):
    runs = _runs(federation)
    assert list(runs) == ["fedavg (no attack)", "fedavg", "krum", "median", "dp", "secagg"]
    for run in runs.values():
        assert [r.round for r in run.rounds] == [0, 1, 2]
        assert all(0.0 <= r.accuracy <= 1.0 and 0.0 <= r.asr <= 1.0 for r in run.rounds)
        assert all(r.bytes > 0 for r in run.rounds[1:])
    base = runs["fedavg (no attack)"]
    assert base.final.accuracy > base.rounds[0].accuracy + 0.2  # the federation learns
    # the attacker's boosted update is ~gamma times an honest one, and the server saw it
    assert runs["fedavg"].malicious_norm > 2 * runs["fedavg"].honest_norm
    assert runs["dp"].epsilon is not None and runs["dp"].epsilon > 0


def _replay_fedavg(settings, attack: str, weighted: bool = True):
    """Flower's FedAvg rule replayed in-process from the seed: clients in id order."""
    job, _, _, _ = prepare(settings)
    weights = get_weights(job.recipe.build(seed=settings.seed))
    history = []
    for server_round in range(1, settings.rounds + 1):
        outs = [job.fit_client(c, weights, server_round, attack) for c in range(settings.clients)]
        history.append(outs)
        total = sum(m["num-examples"] for _, m in outs) if weighted else len(outs)
        weights = [
            sum(w[i].astype(np.float64) * (m["num-examples"] if weighted else 1) for w, m in outs)
            / total
            for i in range(len(weights))
        ]
        weights = [w.astype(np.float32) for w in weights]
    return weights, history


def test_the_simulation_is_a_deterministic_function_of_the_seed(federation, federated_settings):
    """Ray schedules clients in any order; the global model is still the seeded replay."""
    runs = _runs(federation)
    # the replay averages in float64, Flower in float32: equal to training noise after 2 rounds
    replayed, _ = _replay_fedavg(federated_settings, federated_settings.attack)
    for got, want in zip(runs["fedavg"].weights, replayed, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)
    clean, _ = _replay_fedavg(federated_settings, "none")
    for got, want in zip(runs["fedavg (no attack)"].weights, clean, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert not np.allclose(runs["fedavg"].weights[0], clean[0], atol=1e-3)  # the attack shows


def test_same_seed_same_federation_other_seed_another(federated_settings):
    """Two runs from the same settings agree bit for bit, DP noise included."""
    from mlwarden.defenses.federated.simulation import run_federated

    small = federated_settings.model_copy(
        update={"strategies": ["fedavg", "dp", "krum"], "rounds": 1, "baseline": False}
    )
    first, second = run_federated(small), run_federated(small)
    other = run_federated(small.model_copy(update={"seed": small.seed + 1}))
    for a, b, c in zip(first.runs, second.runs, other.runs, strict=True):
        assert [r.accuracy for r in a.rounds] == [r.accuracy for r in b.rounds]
        assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
        assert not np.array_equal(a.weights[0], c.weights[0])


def test_secagg_server_sees_only_the_sum(federation, federated_settings):
    result, record = federation
    secagg = _runs(federation)["secagg"]
    assert secagg.aggregates_seen == 1  # every FitRes reaching the strategy is the same sum
    _, history = _replay_fedavg(federated_settings, federated_settings.attack)
    individual = [np.concatenate([w.ravel() for w in new]) for new, _ in history[0]]
    # nothing any client sent the server (over Flower's grid) holds its plaintext weights
    for reply in record["replies"]:
        for arrays in reply.content.array_records.values():
            for arr in arrays.to_numpy_ndarrays():
                flat = arr.ravel().astype(np.float64)
                for plain in individual:
                    if flat.size == plain.size:
                        assert not np.allclose(flat, plain, atol=1e-3)
    # ... and the sum SecAgg+ unmasked is plain FedAvg of those weights (to quantisation)
    weights = [m["num-examples"] for _, m in history[0]]
    plain_avg = sum(w * p for w, p in zip(weights, individual, strict=True)) / sum(weights)
    aggregate = np.concatenate([a.ravel() for a in record["aggregates"][0]])
    np.testing.assert_allclose(aggregate, plain_avg, atol=1e-3)
    assert len(record["aggregates"]) == federated_settings.rounds


def test_report_and_saved_model(federation, tmp_path):
    from mlwarden.defenses.federated.check import federated_report, save_global_models
    from mlwarden.io.models import load_model

    result, _ = federation
    report = federated_report(result)
    table = report.tables[0]
    assert [row[0] for row in table.rows] == [run.label for run in result.runs]
    assert {f.id for f in report.figures} == {"federated-accuracy", "federated-asr"}
    assert all(len(f.series) == len(result.runs) for f in report.figures)
    assert "federated.dp.epsilon" in report.metrics
    saved = save_global_models(result, tmp_path / "global.pt2")
    path = saved["krum"]
    assert path.name == "global-krum.pt2"
    loaded = load_model(str(path))
    run = next(r for r in result.runs if r.label == "krum")
    x = result.classifier(run)  # same weights, in memory
    _, test, _, _ = prepare(result.settings)
    assert loaded.accuracy(test.x, test.y) == pytest.approx(x.accuracy(test.x, test.y))


def test_audit_check_reports_curves_and_saves_models(federation, tmp_path, monkeypatch):
    """The ``federated`` check on its context: settings from the table, the session's run."""
    from mlwarden.audit.registry import AuditContext, check_spec
    from mlwarden.defenses.federated import check as check_module

    result, _ = federation
    asked = {}

    def fake_run(settings, progress):
        asked["settings"] = settings
        return dataclasses.replace(result, settings=settings)

    monkeypatch.setattr(check_module, "run_federated", fake_run)
    spec = check_spec("federated")
    cfg = spec.config.model_validate({"strategies": ["fedavg", "krum"], "malicious": 0.2,
                                      "max_asr": 0.0})
    ctx = AuditContext(output_dir=tmp_path, seed=11)
    spec.run(ctx, cfg)
    assert asked["settings"].seed == 11  # [audit] seed when the table sets none
    assert asked["settings"].strategies == ["fedavg", "krum"]
    assert {f.id for f in ctx.report.figures} >= {"federated-accuracy", "federated-asr"}
    # max_asr 0: every backdoored run is a finding, the attack-free baseline is not
    backdoored = [r for r in result.runs if r.attack == "backdoor"]
    assert len([f for f in ctx.report.findings if f.id == "MLW-FED-001"]) == len(backdoored)
    models = ctx.report.subject["federated_models"]
    assert all(Path(p).is_file() for p in models.values())
