"""The risk engine: the threats of the issue's scenarios, and none without their cause."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.findings import Severity
from mlwarden.risk import QUESTIONS, assess, parse_answers, severity_for


def _atlas(model: Any) -> set[str]:
    return model.atlas_ids


def test_issue_system_gets_the_threats_and_controls_of_the_issue(assess_of: Any) -> None:
    model = assess_of("issue")
    atlas = _atlas(model)
    for technique in (
        "AML.T0010.003",
        "AML.T0018.000",
        "AML.T0024.002",
        "AML.T0024.000",
        "AML.T0015",
        "AML.T0029",
    ):
        assert technique in atlas, technique
    for control in ("AML.M0014", "AML.M0004", "AML.M0002", "AML.M0019", "AML.M0015"):
        assert control in model.control_ids, control
    # controls are attached to the threat they answer, not just present somewhere
    assert "AML.M0014" in model.threat("model-supply-chain").rule.controls
    assert {"AML.M0004", "AML.M0002", "AML.M0019"} <= set(
        model.threat("model-extraction").rule.controls
    )
    assert "AML.M0015" in model.threat("evasion").rule.controls
    assert "AML.M0004" in model.threat("denial-of-service").rule.controls
    # not on-device, no retraining, internal data only
    assert "AML.T0044" not in atlas
    assert "AML.T0020" not in atlas


def test_register_is_ranked_by_likelihood_times_impact(assess_of: Any) -> None:
    model = assess_of("issue")
    risks = [t.risk for t in model.threats]
    assert risks == sorted(risks, reverse=True)
    for t in model.threats:
        assert t.risk == t.likelihood.value * t.impact.value
        assert 1 <= t.likelihood.value <= 5 and 1 <= t.impact.value <= 5
        assert t.severity is severity_for(t.risk)


def test_on_device_model_gets_full_model_access(assess_of: Any) -> None:
    on_device = assess_of("quiet", deployment__exposure="on-device")
    assert "AML.T0044" in _atlas(on_device)
    assert {"AML.M0017", "AML.M0005"} <= set(on_device.threat("full-model-access").rule.controls)
    for exposure in ("public-api", "partner-api", "internal-api", "batch"):
        assert "AML.T0044" not in _atlas(assess_of("quiet", deployment__exposure=exposure))


def test_continuous_retraining_on_user_data_gets_training_data_poisoning(assess_of: Any) -> None:
    model = assess_of(
        "quiet",
        data__sources=["user-submitted"],
        data__retraining="continuous-from-production",
        deployment__exposure="public-api",
    )
    poisoning = model.threat("training-data-poisoning")
    assert "AML.T0020" in poisoning.rule.atlas
    assert poisoning.severity >= Severity.HIGH
    assert {"AML.M0007", "AML.M0025"} <= set(poisoning.rule.controls)
    # internal data, no retraining: no poisoning threat at all
    assert "AML.T0020" not in _atlas(assess_of("quiet"))
    # user data without retraining is still a threat, but a smaller one
    once = assess_of("quiet", data__sources=["user-submitted"]).threat("training-data-poisoning")
    assert once.risk < poisoning.risk


def test_no_supply_chain_threats_for_a_model_trained_in_house(assess_of: Any) -> None:
    model = assess_of("issue", model__source="trained-in-house", model__transfer_learning="none")
    atlas = _atlas(model)
    assert "AML.T0010.003" not in atlas
    assert "AML.T0018.000" not in atlas
    assert "AML.T0043.002" not in atlas


def test_no_inference_api_threats_for_batch_scoring(assess_of: Any) -> None:
    atlas = _atlas(assess_of("issue", deployment__exposure="batch"))
    for technique in (
        "AML.T0024.000",
        "AML.T0024.001",
        "AML.T0024.002",
        "AML.T0029",
        "AML.T0040",
        "AML.T0015",
    ):
        assert technique not in atlas, technique


def test_no_membership_inference_without_personal_data(assess_of: Any) -> None:
    atlas = _atlas(assess_of("issue", data__personal=False))
    assert "AML.T0024.000" not in atlas
    assert "AML.T0024.001" not in atlas
    assert "AML.T0024.002" in atlas  # the model can still be stolen


def test_quiet_system_has_no_external_threats(assess_of: Any) -> None:
    assert assess_of("quiet").threats == []


def test_authentication_and_rate_limits_lower_extraction_risk(assess_of: Any) -> None:
    open_api = assess_of("issue").threat("model-extraction")
    guarded = assess_of(
        "issue",
        deployment__authentication="api-key",
        deployment__rate_limited=True,
        deployment__outputs="label",
    )
    assert guarded.threat("model-extraction").risk < open_api.risk
    assert "anonymous-api-access" not in {t.id for t in guarded.threats}


def test_higher_impact_answers_raise_risk(assess_of: Any) -> None:
    low = assess_of("issue", impact__confidentiality="low").threat("model-extraction")
    high = assess_of("issue", impact__confidentiality="high").threat("model-extraction")
    assert high.risk > low.risk


def test_reasons_name_the_answers_that_moved_the_score(assess_of: Any) -> None:
    threat = assess_of("issue").threat("model-extraction")
    assert threat.triggered_by == {"deployment.exposure": "public-api"}
    assert any("authentication = none" in r for r in threat.likelihood.reasons)


def test_assessment_is_deterministic(assess_of: Any) -> None:
    a, b = assess_of("issue"), assess_of("issue")
    assert [(t.id, t.risk) for t in a.threats] == [(t.id, t.risk) for t in b.threats]
    assert [c.id for c in a.controls] == [c.id for c in b.controls]


@pytest.mark.parametrize(
    ("risk", "severity"),
    [
        (25, "critical"),
        (20, "critical"),
        (19, "high"),
        (12, "high"),
        (11, "medium"),
        (6, "medium"),
        (5, "low"),
        (3, "low"),
        (2, "info"),
        (1, "info"),
    ],
)
def test_severity_bands(risk: int, severity: str) -> None:
    assert severity_for(risk).value == severity


# -- properties over every possible answer set ---------------------------------------------


def _strategy(key: str) -> st.SearchStrategy[Any]:
    q = QUESTIONS[key]
    if q.kind == "bool":
        return st.booleans()
    if q.kind == "multi":
        return st.lists(st.sampled_from(q.choices), min_size=1, max_size=3, unique=True)
    return st.sampled_from(q.choices)


ANSWER_KEYS = [k for k, q in QUESTIONS.items() if q.kind in ("bool", "multi", "choice")]


@st.composite
def answer_sets(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in ANSWER_KEYS:
        section, name = key.split(".")
        data.setdefault(section, {})[name] = draw(_strategy(key))
    return data


def _with(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    section, name = key.split(".")
    return {**data, section: {**data[section], name: value}}


@settings(max_examples=60, deadline=None)
@given(answer_sets())
def test_register_invariants_hold_for_any_answers(data: dict[str, Any]) -> None:
    model = assess(parse_answers(data))
    ids = [t.id for t in model.threats]
    assert len(ids) == len(set(ids))
    assert [t.risk for t in model.threats] == sorted((t.risk for t in model.threats), reverse=True)
    threat_ids = set(ids)
    for control in model.controls:
        assert control.threats and set(control.threats) <= threat_ids
    for t in model.threats:
        assert set(t.rule.controls) <= model.control_ids


@settings(max_examples=60, deadline=None)
@given(answer_sets())
def test_adding_a_safeguard_never_raises_any_risk(data: dict[str, Any]) -> None:
    """Rate limiting, authentication and label-only outputs may only lower risks."""
    weak = _with(
        _with(_with(data, "deployment.rate_limited", False), "deployment.authentication", "none"),
        "deployment.outputs",
        "logits",
    )
    strong = _with(
        _with(_with(data, "deployment.rate_limited", True), "deployment.authentication", "mtls"),
        "deployment.outputs",
        "label",
    )
    before = {t.id: t.risk for t in assess(parse_answers(weak)).threats}
    after = {t.id: t.risk for t in assess(parse_answers(strong)).threats}
    assert set(after) <= set(before)
    for threat_id, risk in after.items():
        assert risk <= before[threat_id], threat_id
