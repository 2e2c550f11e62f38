"""Gradient-masking sanity checks: silent on an honest model, loud on a masked one."""

from __future__ import annotations

import copy

import pytest
import torch

from mlwarden.core import Classifier, ParameterError
from mlwarden.core.findings import Report
from mlwarden.evaluation import run_sanity_checks


class _Quantise(torch.nn.Module):
    """Round inputs to 4 levels: zero gradient everywhere (a classic masking defence)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.fixture(scope="module")
def batch(digits_split):
    _, test = digits_split
    return test.x[:24], test.y[:24]


def test_honest_model_passes(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    result = run_sanity_checks(
        digits_cnn, x, y, [0.05, 0.15], steps=5, blackbox_queries=100, tolerance=0.05
    )
    assert result.metrics["evasion.sanity.unbounded_robust_accuracy"] == 0.0
    assert not [
        f.id for f in result.findings if f.id in ("MLW-EVA-001", "MLW-EVA-002", "MLW-EVA-003")
    ]
    # every check ends in a stated pass or fail with its reason, in the report's table too
    judged = {name: ok for name, ok, _ in result.outcomes}
    assert len(judged) == 4
    assert judged["unbounded eps reaches ~0% accuracy"] and judged["accuracy falls as eps grows"]
    table = result.to_report(Report()).tables[-1]
    assert table.columns == ["check", "result", "reason"] and len(table.rows) == 4
    assert all(row[1] in ("pass", "fail") and row[2] for row in table.rows)


def test_masked_model_is_flagged(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    masked_module = torch.nn.Sequential(_Quantise(), copy.deepcopy(digits_cnn.module))
    masked = Classifier(masked_module, digits_cnn.spec, name="masked")
    result = run_sanity_checks(masked, x, y, [0.1, 0.2], steps=5, blackbox_queries=200)
    ids = {f.id for f in result.findings}
    assert ids & {"MLW-EVA-001", "MLW-EVA-005"}, result.metrics
    assert all(f.severity.value == "medium" for f in result.findings)
    assert "gradient masking" in result.findings[0].detail
    failed = [name for name, ok, _ in result.outcomes if not ok]
    assert failed and not result.passed
    assert {"unbounded eps reaches ~0% accuracy", "black-box does not beat white-box"} & set(failed)


def test_sanity_needs_a_positive_budget(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    with pytest.raises(ParameterError, match="eps"):
        run_sanity_checks(digits_cnn, x, y, [0.0])
