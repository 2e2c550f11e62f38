"""Membership inference on a text classifier through the same APIs as on tensors: the
threshold attack and LiRA with shadow heads on the target's frozen features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def splits(text_victim, text_splits):
    from mlwarden.audit.text import labelled_text

    return {name: labelled_text(str(path), text_victim) for name, path in text_splits.items()}


@pytest.fixture(scope="module")
def leak_report(text_victim, splits):
    from mlwarden.evaluation.privacy import membership_audit

    members = splits["members"].subset(range(80))
    non_members = splits["non_members"].subset(range(80))
    return membership_audit(
        text_victim,
        members,
        non_members,
        attacks=["threshold", "lira-offline"],
        shadow_models=8,
        shadow_epochs=100,
        shadow_lr=1e-2,
    )


def test_overfit_text_victim_leaks_membership(leak_report) -> None:
    metrics = leak_report.metrics
    assert metrics["privacy.threshold.auc"] > 0.65
    assert metrics["privacy.lira-offline.auc"] > 0.65
    assert metrics["privacy.members"] == metrics["privacy.non_members"] == 80
    assert any(f.id == "MLW-PRIV-001" for f in leak_report.findings)


def test_lira_shadows_of_a_text_model_state_their_recipe(leak_report) -> None:
    recipe = dict(next(t for t in leak_report.tables if t.id == "lira-shadow-recipe").rows)
    assert "frozen" in recipe["shadows"] and recipe["feature_dim"] == 384
    exposed = next(t for t in leak_report.tables if t.id == "membership-exposed")
    assert exposed.columns[-1] == "text"


def test_non_members_against_non_members_is_chance(text_victim, splits) -> None:
    from mlwarden.evaluation.privacy import membership_audit

    report = membership_audit(
        text_victim,
        splits["non_members"].subset(range(80, 130)),
        splits["more_non_members"].subset(range(50)),
        attacks=["threshold"],
    )
    assert abs(report.metrics["privacy.threshold.auc"] - 0.5) < 0.15
    assert not any(f.id == "MLW-PRIV-001" for f in report.findings)


def test_shadow_heads_reproduce_the_target(text_victim) -> None:
    from mlwarden.attacks.inference.text_shadows import classification_head, head_features

    texts = ["A joyless, plodding mess.", "Warm, funny and wise."]
    features = head_features(text_victim, texts)
    _, head = classification_head(text_victim)
    with torch.no_grad():
        torch.testing.assert_close(head(features), text_victim.logits(texts), atol=1e-4, rtol=1e-4)


def test_privacy_cli_on_a_text_model(tmp_path: Path, cli, text_victim_path, text_splits) -> None:
    out = tmp_path / "privacy.json"
    result = cli(
        "privacy",
        "audit",
        "--model",
        str(text_victim_path),
        "--members",
        str(text_splits["members"]),
        "--non-members",
        str(text_splits["non_members"]),
        "--samples",
        "40",
        "--attack",
        "threshold",
        "-f",
        "json",
        "-o",
        str(out),
    )
    metrics = json.loads(out.read_text(encoding="utf-8"))["metrics"]
    assert metrics["privacy.members"] == 40
    assert metrics["privacy.threshold.auc"] > 0.6
    assert result.code == 1  # the leak is a high finding


def test_text_oracle_counts_and_budgets_queries(text_victim) -> None:
    from mlwarden.core.contract import ModelKind, as_oracle
    from mlwarden.core.errors import DataError
    from mlwarden.core.oracle import BudgetExhausted, LabelOnlyOracle, TextClassifierOracle

    oracle = TextClassifierOracle(text_victim, budget=3)
    assert oracle.model_kind is ModelKind.TEXT_SCORE_ORACLE
    probs = oracle(["Great fun.", "Dull."])
    assert probs.shape == (2, 2) and oracle.queries == 2
    with pytest.raises(BudgetExhausted):
        oracle(["one", "two"])
    with pytest.raises(DataError, match="list of strings, got a tensor"):
        oracle(torch.zeros(2, 8))
    labels = LabelOnlyOracle(as_oracle(text_victim, text=True))
    assert labels.model_kind is ModelKind.TEXT_LABEL_ORACLE
    assert labels("Great fun.").shape == (1,)


def test_tensor_attack_paths_refuse_text_and_back(text_victim, cancer_mlp) -> None:
    from mlwarden.attacks.extraction import TextKnockoff
    from mlwarden.core.contract import as_oracle
    from mlwarden.core.errors import ParameterError

    with pytest.raises(ParameterError, match="Square needs tensor inputs; .* text classifier"):
        as_oracle(text_victim, by="Square")
    with pytest.raises(
        ParameterError, match="needs pooled embeddings, text inputs; .* white-box classifier"
    ):
        TextKnockoff(10, cancer_mlp)
