"""The rules file: answer patterns -> threats -> controls -> mlwarden checks, as data.

A rule never needs Python. Its ``when`` is a mapping from questionnaire keys to the
answers that trigger it (several mappings in a list mean *any of them*)::

    when:
      model.source: [pretrained-public, pretrained-vendor]   # any of these
      deployment.exposure: {not: [batch]}                      # none of these
      data.personal: true                                      # exactly this

For a list answer (``data.sources``) a condition holds when the lists overlap
(``not``: when they do not). Likelihood and impact (1-5) start from a base and
move by ``adjust`` steps whose ``when`` uses the same language; the impact base is
the highest of the answers for the named CIA dimensions. Risk = likelihood x impact,
the usual qualitative risk matrix (e.g. ISO/IEC 27005, OWASP risk rating).

`RuleSet.problems` lists every inconsistency at once (unknown answer key, value not
allowed by the questionnaire, id missing from the catalogue, control without an
entry), in the way Opacus' ``ModuleValidator.validate`` reports every problem.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core.errors import ConfigError
from mlwarden.risk.catalogue import Catalogue
from mlwarden.risk.questionnaire import QUESTIONS, describe_value

RULES_VERSION = 1
MAX_RULES_BYTES = 4 * 1024 * 1024
Dimension = Literal["integrity", "confidentiality", "availability"]
Stage = Literal["design", "development", "deployment", "operation", "end-of-life"]

LEVEL_SCORE: dict[str, int] = {"low": 2, "medium": 3, "high": 4}
"""Impact answers on the 1-5 scale; the top score 5 is reached only through adjustments."""

Condition = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Adjustment(_Strict):
    """Move a score by ``add`` (may be negative) when ``when`` holds."""

    when: Condition | list[Condition]
    add: int = Field(ge=-4, le=4)
    reason: str = ""


class LikelihoodRule(_Strict):
    base: int = Field(ge=1, le=5)
    adjust: list[Adjustment] = Field(default_factory=list)


class ImpactRule(_Strict):
    dimensions: list[Dimension] = Field(min_length=1)
    adjust: list[Adjustment] = Field(default_factory=list)


class ThreatRule(_Strict):
    """One threat: when it applies, how likely and harmful it is, what controls it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    description: str
    stage: Stage
    atlas: list[str] = Field(min_length=1)
    owasp: list[str] = Field(default_factory=list)
    ncsc: list[str] = Field(default_factory=list)
    when: Condition | list[Condition]
    likelihood: LikelihoodRule
    impact: ImpactRule
    controls: list[str] = Field(min_length=1)
    checks: list[str] = Field(
        default_factory=list,
        description="`mlwarden audit` checks that measure this threat (the skeleton enables them)",
    )

    @property
    def finding_id(self) -> str:
        return "MLW-RISK-" + self.id.upper()


class ControlRule(_Strict):
    """A control (an ATLAS mitigation) and how mlwarden verifies it."""

    requirement: str = Field(description="what the team must do, as a checklist item")
    audit_checks: list[str] = Field(
        default_factory=list, description="`mlwarden audit` checks whose results verify it"
    )
    commands: list[str] = Field(default_factory=list, description="CLI commands to run")
    gateway: list[str] = Field(
        default_factory=list, description="gateway settings ([gateway] section) that implement it"
    )
    ncsc: list[str] = Field(default_factory=list)


GATEWAY_SETTINGS: dict[str, str] = {
    "auth": "authenticate every caller (API keys: `mlwarden keys create`)",
    "rate_limit": "per-key query limits and query budgets",
    "validation": "reject malformed and out-of-distribution inputs",
    "hardening": "return only the label or rounded top-k scores",
    "monitoring": "watch query streams for extraction and black-box attacks",
    "audit_log": "tamper-evident log of every query (`mlwarden audit-log verify`)",
}
AUDIT_CHECKS: tuple[str, ...] = (
    "accuracy",
    "scan",
    "evasion",
    "backdoor",
    "transfer",
    "privacy",
    "extraction",
)
"""The `mlwarden audit` checks a control may name (``[checks.<name>]`` sections)."""


class RuleSet(_Strict):
    version: Literal[1] = RULES_VERSION
    extends: Literal["builtin"] | None = Field(
        None, description="'builtin': add to the shipped rules instead of replacing them"
    )
    threats: list[ThreatRule] = Field(min_length=1)
    controls: dict[str, ControlRule]

    @field_validator("threats")
    @classmethod
    def _unique_ids(cls, threats: list[ThreatRule]) -> list[ThreatRule]:
        seen: set[str] = set()
        for t in threats:
            if t.id in seen:
                raise ValueError(f"threat id '{t.id}' is used twice")
            seen.add(t.id)
        return threats

    def problems(self, catalogue: Catalogue) -> list[str]:
        """Every inconsistency of the rules with the questionnaire and the catalogue."""
        out: list[str] = []
        for t in self.threats:
            where = f"threat '{t.id}'"
            out += _condition_problems(t.when, f"{where} when")
            for i, adj in enumerate(t.likelihood.adjust):
                out += _condition_problems(adj.when, f"{where} likelihood.adjust[{i}]")
            for i, adj in enumerate(t.impact.adjust):
                out += _condition_problems(adj.when, f"{where} impact.adjust[{i}]")
            out += [
                f"{where}: '{a}' is not an ATLAS technique"
                for a in t.atlas
                if a not in catalogue.techniques
            ]
            out += [
                f"{where}: '{o}' is not an OWASP ML Top 10 id"
                for o in t.owasp
                if o not in catalogue.owasp
            ]
            out += [
                f"{where}: '{n}' is not an NCSC principle id"
                for n in t.ncsc
                if n not in catalogue.ncsc
            ]
            out += [
                f"{where}: unknown audit check '{c}' (known: {', '.join(AUDIT_CHECKS)})"
                for c in t.checks
                if c not in AUDIT_CHECKS
            ]
            for c in t.controls:
                if c not in catalogue.mitigations:
                    out.append(f"{where}: control '{c}' is not an ATLAS mitigation")
                if c not in self.controls:
                    out.append(f"{where}: control '{c}' has no entry under 'controls'")
        for cid, control in self.controls.items():
            where = f"control '{cid}'"
            if cid not in catalogue.mitigations:
                out.append(f"{where} is not an ATLAS mitigation")
            out += [
                f"{where}: unknown audit check '{c}' (known: {', '.join(AUDIT_CHECKS)})"
                for c in control.audit_checks
                if c not in AUDIT_CHECKS
            ]
            out += [
                f"{where}: unknown gateway setting '{g}' (known: {', '.join(GATEWAY_SETTINGS)})"
                for g in control.gateway
                if g not in GATEWAY_SETTINGS
            ]
            out += [
                f"{where}: '{n}' is not an NCSC principle id"
                for n in control.ncsc
                if n not in catalogue.ncsc
            ]
        return out

    def all_ids(self) -> set[str]:
        """Every catalogue id the rules cite."""
        ids: set[str] = set(self.controls)
        for t in self.threats:
            ids.update(t.atlas, t.owasp, t.ncsc, t.controls)
        for c in self.controls.values():
            ids.update(c.ncsc)
        return ids

    def all_commands(self) -> set[str]:
        return {cmd for c in self.controls.values() for cmd in c.commands}


# -- conditions -------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _condition_problems(when: Condition | list[Condition], where: str) -> list[str]:
    out: list[str] = []
    for cond in _as_list(when):
        if not isinstance(cond, dict) or not cond:
            out.append(f"{where}: a condition must be a non-empty mapping of answer keys")
            continue
        for key, expected in cond.items():
            q = QUESTIONS.get(key)
            if q is None:
                out.append(f"{where}: unknown answer key '{key}' (known: {', '.join(QUESTIONS)})")
                continue
            if isinstance(expected, dict):
                if set(expected) != {"not"}:
                    out.append(f"{where}: '{key}' accepts a value, a list or {{not: ...}}")
                    continue
                expected = expected["not"]
            for value in _as_list(expected):
                if q.kind in ("choice", "multi") and value not in q.choices:
                    out.append(
                        f"{where}: '{key}' = {describe_value(value)} is not an allowed answer "
                        f"({q.allowed})"
                    )
                elif q.kind == "bool" and not isinstance(value, bool):
                    out.append(f"{where}: '{key}' must be compared with true or false")
    return out


def _holds(answer: Any, expected: Any) -> bool:
    negate = isinstance(expected, dict)
    wanted = set(map(_norm, _as_list(expected["not"] if negate else expected)))
    given = set(map(_norm, _as_list(answer)))
    hit = bool(given & wanted)
    return not hit if negate else hit


def _norm(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


def matches(when: Condition | list[Condition], answers: dict[str, Any]) -> bool:
    """Whether any of the condition mappings holds entirely for the flat answers."""
    return any(
        all(_holds(answers[key], expected) for key, expected in cond.items())
        for cond in _as_list(when)
    )


def matched_answers(when: Condition | list[Condition], answers: dict[str, Any]) -> dict[str, Any]:
    """The answers that made ``when`` hold (the first mapping that holds), for evidence."""
    for cond in _as_list(when):
        if all(_holds(answers[key], expected) for key, expected in cond.items()):
            return {key: answers[key] for key in cond}
    return {}


# -- loading ----------------------------------------------------------------------------


def parse_rules(data: Any, source: str, catalogue: Catalogue) -> RuleSet:
    """Validate parsed rules data against the schema, questionnaire and catalogue."""
    try:
        rules = RuleSet.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"rules file {source} is invalid: {details}") from None
    problems = rules.problems(catalogue)
    if problems:
        raise ConfigError(f"rules file {source} is inconsistent: " + "; ".join(problems))
    return rules


def load_rules(path: str | Path | None = None, catalogue: Catalogue | None = None) -> RuleSet:
    """The shipped rules, or a user's rules file that replaces them."""
    from mlwarden.risk.catalogue import load_catalogue

    catalogue = catalogue or load_catalogue()
    if path is None:
        return _default_rules()
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RULES_BYTES:
            raise ConfigError(f"rules file '{path}' is larger than {MAX_RULES_BYTES // 1024} KiB")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"rules file '{path}' not found") from None
    except RecursionError:
        raise ConfigError(f"rules file '{path}' is nested too deeply") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"rules file '{path}' cannot be read as YAML: {exc}") from None
    if isinstance(data, dict) and data.get("extends") == "builtin":
        data = _extend_builtin(data)
    return parse_rules(data, f"'{path}'", catalogue)


def _extend_builtin(data: dict[str, Any]) -> dict[str, Any]:
    """Shipped rules plus the user's: a threat or control with the same id replaces ours."""
    base = yaml.safe_load(default_rules_text())
    own_threats = data.get("threats") or []
    own_ids = {t.get("id") for t in own_threats if isinstance(t, dict)}
    merged = dict(data)
    merged["threats"] = [t for t in base["threats"] if t["id"] not in own_ids] + list(own_threats)
    merged["controls"] = {**base["controls"], **(data.get("controls") or {})}
    return merged


@lru_cache(maxsize=1)
def _default_rules() -> RuleSet:
    from mlwarden.risk.catalogue import load_catalogue

    text = (
        resources.files("mlwarden.risk")
        .joinpath("data")
        .joinpath("rules.yaml")
        .read_text(encoding="utf-8")
    )
    return parse_rules(yaml.safe_load(text), "(shipped rules.yaml)", load_catalogue())


def default_rules_text() -> str:
    """The shipped rules file, as a starting point for a team's own rules."""
    return (
        resources.files("mlwarden.risk")
        .joinpath("data")
        .joinpath("rules.yaml")
        .read_text(encoding="utf-8")
    )
