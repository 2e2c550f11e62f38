"""The risk engine: questionnaire answers + rules -> a ranked threat register.

Pure functions over pydantic data: no I/O, no randomness, so the same answers and
rules always give the same register (ties broken by rule order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mlwarden.core.findings import Severity
from mlwarden.risk.catalogue import Catalogue, load_catalogue
from mlwarden.risk.questionnaire import Answers
from mlwarden.risk.rules import (
    LEVEL_SCORE,
    Adjustment,
    ControlRule,
    RuleSet,
    ThreatRule,
    load_rules,
    matched_answers,
    matches,
)

ControlStatus = Literal["verified", "failed", "not checked"]

SEVERITY_THRESHOLDS: tuple[tuple[int, Severity], ...] = (
    (20, Severity.CRITICAL),
    (12, Severity.HIGH),
    (6, Severity.MEDIUM),
    (3, Severity.LOW),
)


def severity_for(risk: int) -> Severity:
    """Severity band of a likelihood x impact score (1..25)."""
    for threshold, severity in SEVERITY_THRESHOLDS:
        if risk >= threshold:
            return severity
    return Severity.INFO


def _clamp(value: int) -> int:
    return max(1, min(5, value))


@dataclass(frozen=True)
class Score:
    """A 1..5 score with the reasons it moved from its base."""

    value: int
    base: int
    reasons: tuple[str, ...] = ()


def _score(base: int, adjust: list[Adjustment], answers: dict[str, Any]) -> Score:
    value = base
    reasons: list[str] = []
    for adj in adjust:
        if matches(adj.when, answers):
            value += adj.add
            cause = ", ".join(
                f"{k} = {_fmt(v)}" for k, v in matched_answers(adj.when, answers).items()
            )
            reasons.append(f"{adj.add:+d} ({adj.reason or cause})")
    return Score(_clamp(value), base, tuple(reasons))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@dataclass(frozen=True)
class AssessedThreat:
    """A threat that applies to the system, with its score and why it applies."""

    rule: ThreatRule
    likelihood: Score
    impact: Score
    triggered_by: dict[str, Any]

    @property
    def risk(self) -> int:
        return self.likelihood.value * self.impact.value

    @property
    def severity(self) -> Severity:
        return severity_for(self.risk)

    @property
    def id(self) -> str:
        return self.rule.id


@dataclass(frozen=True)
class RequiredControl:
    """A control the threats call for, with the threats it answers."""

    id: str
    name: str
    rule: ControlRule
    threats: tuple[str, ...]
    max_risk: int


@dataclass
class ThreatModel:
    """The result of an assessment: threats ranked by risk, controls, the inputs used."""

    answers: Answers
    threats: list[AssessedThreat]
    controls: list[RequiredControl]
    catalogue: Catalogue
    rules: RuleSet
    control_status: dict[str, tuple[ControlStatus, str]] = field(default_factory=dict)

    def threat(self, threat_id: str) -> AssessedThreat:
        for t in self.threats:
            if t.id == threat_id:
                return t
        raise KeyError(threat_id)

    @property
    def atlas_ids(self) -> set[str]:
        return {a for t in self.threats for a in t.rule.atlas}

    @property
    def control_ids(self) -> set[str]:
        return {c.id for c in self.controls}

    def audit_checks(self) -> list[str]:
        """The `mlwarden audit` checks that measure the threats, in a stable order."""
        wanted = {c for t in self.threats for c in t.rule.checks}
        from mlwarden.risk.rules import AUDIT_CHECKS

        return [c for c in AUDIT_CHECKS if c in wanted]

    def gateway_settings(self) -> list[str]:
        from mlwarden.risk.rules import GATEWAY_SETTINGS

        wanted = {g for ctl in self.controls for g in ctl.rule.gateway}
        return [g for g in GATEWAY_SETTINGS if g in wanted]


def assess(
    answers: Answers, rules: RuleSet | None = None, catalogue: Catalogue | None = None
) -> ThreatModel:
    """Apply ``rules`` to ``answers``: the ranked threat register and required controls."""
    catalogue = catalogue or load_catalogue()
    rules = rules or load_rules(catalogue=catalogue)
    flat = answers.flat()
    threats: list[AssessedThreat] = []
    for rule in rules.threats:
        if not matches(rule.when, flat):
            continue
        likelihood = _score(rule.likelihood.base, rule.likelihood.adjust, flat)
        impact_base = max(LEVEL_SCORE[flat[f"impact.{d}"]] for d in rule.impact.dimensions)
        impact = _score(impact_base, rule.impact.adjust, flat)
        threats.append(AssessedThreat(rule, likelihood, impact, matched_answers(rule.when, flat)))
    order = {r.id: i for i, r in enumerate(rules.threats)}
    threats.sort(key=lambda t: (-t.risk, -t.impact.value, order[t.id]))

    controls: dict[str, list[AssessedThreat]] = {}
    for t in threats:
        for cid in t.rule.controls:
            controls.setdefault(cid, []).append(t)
    required = [
        RequiredControl(
            id=cid,
            name=catalogue.mitigations[cid].name,
            rule=rules.controls[cid],
            threats=tuple(t.id for t in ts),
            max_risk=max(t.risk for t in ts),
        )
        for cid, ts in controls.items()
    ]
    required.sort(key=lambda c: (-c.max_risk, -len(c.threats), c.id))
    return ThreatModel(answers, threats, required, catalogue, rules)
