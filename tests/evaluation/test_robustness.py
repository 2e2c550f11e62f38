"""The attack ensemble: robust accuracy curves, reports, findings."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.evasion import FGSM, PGD
from mlwarden.attacks.evasion._projection import lp_norm
from mlwarden.core import Classifier, ParameterError, Severity
from mlwarden.evaluation import evaluate_robustness, preset_attacks


@pytest.fixture(scope="module")
def batch(digits_split):
    _, test = digits_split
    return test.x[:60], test.y[:60]


@pytest.fixture(scope="module")
def fast_result(digits_cnn: Classifier, batch):
    x, y = batch
    return evaluate_robustness(digits_cnn, x, y, [0.2, 0.05, 0.1], preset="fast", steps=10)


def test_curve_is_monotone_and_every_fooled_sample_is_a_real_adversarial(
    digits_cnn: Classifier, batch, fast_result
) -> None:
    x, y = batch
    r = fast_result
    assert r.eps == [0.05, 0.1, 0.2]
    accs = [a for _, a in r.curve]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] == pytest.approx(digits_cnn.accuracy(x, y))
    assert accs[-1] < 0.3
    for e in r.eps:
        broken = r.clean_correct & ~r.robust[e]
        adv = r.x_adv[e][broken]
        assert bool((digits_cnn.predict(adv) != y[broken]).all())
        assert float(lp_norm(adv - x[broken], "linf").max()) <= e + 1e-5


def test_ensemble_only_attacks_survivors(fast_result) -> None:
    costs = fast_result.costs
    assert [c.eps for c in costs] == [0.05, 0.1, 0.2]
    for before, after in zip(costs, costs[1:], strict=False):
        assert after.attacked == before.attacked - before.fooled
    assert fast_result.gradient_evaluations == sum(c.gradient_evaluations for c in costs)


def test_report_has_metrics_curve_tables_and_findings(fast_result) -> None:
    report = fast_result.to_report(min_robust_accuracy=0.9)
    m = report.metrics
    assert m["evasion.fast.linf.robust_accuracy@0.1"] == pytest.approx(
        fast_result.robust_accuracy(0.1), abs=1e-6
    )
    assert "evasion.clean_accuracy" in m
    fig = report.figures[0]
    assert fig.kind == "line" and fig.series[0].x == [0.0, 0.05, 0.1, 0.2]
    per_class = next(t for t in report.tables if t.id.startswith("evasion-per-class"))
    assert sum(row[1] for row in per_class.rows) == 60
    assert per_class.columns[-1] == "robust@0.2"
    ids = {f.id: f for f in report.findings}
    assert ids["MLW-EVA-010"].severity is Severity.HIGH
    lenient = fast_result.to_report(min_robust_accuracy=0.0)
    assert [f.id for f in lenient.findings] == ["MLW-EVA-011"]  # lost > half of its accuracy


def test_standard_is_at_least_as_strong_as_its_first_attack(digits_cnn: Classifier, batch) -> None:
    x, y = batch[0][:20], batch[1][:20]
    std = evaluate_robustness(digits_cnn, x, y, [0.08], preset="standard", steps=5, queries=100)
    assert [c.attack for c in std.costs][:2] == ["apgd-ce", "apgd-t"]
    fast = evaluate_robustness(digits_cnn, x, y, [0.08], preset="fast", steps=5)
    assert std.robust_accuracy(0.08) <= fast.robust_accuracy(0.08)
    if any(c.attack == "square" for c in std.costs):
        assert std.queries > 0


def test_custom_attacks_and_presets(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    r = evaluate_robustness(digits_cnn, x, y, [0.1], attacks={0.1: [FGSM(0.1), PGD(0.1, steps=5)]})
    assert r.preset == "custom" and [c.attack for c in r.costs] == ["fgsm", "pgd"]
    names = [a.name for a in preset_attacks("standard", 0.1)]
    assert names[:2] == ["apgd-ce", "apgd-t"]
    assert [a.name for a in preset_attacks("pgd", 0.1)] == ["pgd"]


def test_eps_zero_is_clean_accuracy(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    r = evaluate_robustness(digits_cnn, x, y, [0.0], preset="pgd")
    assert r.robust_accuracy(0.0) == pytest.approx(r.clean_accuracy) and r.costs == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"preset": "heavy"}, "preset"),
        ({"eps": []}, "eps"),
        ({"eps": [-0.1]}, "eps"),
        ({"norm": "l1"}, "norm"),
    ],
)
def test_bad_arguments(digits_cnn: Classifier, batch, kwargs, match) -> None:
    x, y = batch
    args = {"eps": [0.1], **kwargs}
    with pytest.raises(ParameterError, match=match):
        evaluate_robustness(digits_cnn, x, y, **args)


def test_labels_out_of_range_are_refused(digits_cnn: Classifier, batch) -> None:
    from mlwarden.core import DataError

    x, _ = batch
    with pytest.raises(DataError):
        evaluate_robustness(digits_cnn, x, torch.full((len(x),), 12), [0.1])
