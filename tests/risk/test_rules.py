"""Rules as data: a team adds a threat with YAML only; broken rules are refused with reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlwarden.core.errors import ConfigError
from mlwarden.risk import assess, load_rules
from mlwarden.risk.rules import default_rules_text, matches

OUTPUT_INTEGRITY = {
    "id": "output-integrity",
    "title": "Predictions altered on their way to the consumer",
    "description": "A partner relays predictions; a compromised relay can change them.",
    "stage": "deployment",
    "atlas": ["AML.T0048"],
    "owasp": ["ML09"],
    "when": {"deployment.exposure": "partner-api", "deployment.authentication": {"not": "mtls"}},
    "likelihood": {
        "base": 2,
        "adjust": [{"when": {"deployment.authentication": "none"}, "add": 2}],
    },
    "impact": {"dimensions": ["integrity"]},
    "controls": ["AML.M0012"],
}
ENCRYPTION = {"requirement": "Sign and encrypt predictions end to end.", "ncsc": ["NCSC-3.1"]}


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_a_team_adds_a_threat_without_python(tmp_path: Path, answers_of: Any) -> None:
    path = _write(
        tmp_path,
        {
            "version": 1,
            "extends": "builtin",
            "threats": [OUTPUT_INTEGRITY],
            "controls": {"AML.M0012": ENCRYPTION},
        },
    )
    rules = load_rules(path)
    partner = answers_of("issue", deployment__exposure="partner-api")
    model = assess(partner, rules)
    threat = model.threat("output-integrity")
    assert threat.likelihood.value == 4 and threat.rule.finding_id == "MLW-RISK-OUTPUT-INTEGRITY"
    assert "AML.M0012" in model.control_ids
    assert "model-extraction" in {t.id for t in model.threats}  # the shipped rules still apply
    # no cause, no threat
    mtls = answers_of(
        "issue", deployment__exposure="partner-api", deployment__authentication="mtls"
    )
    assert "output-integrity" not in {t.id for t in assess(mtls, rules).threats}


def test_a_rules_file_without_extends_replaces_the_shipped_rules(
    tmp_path: Path, answers_of: Any
) -> None:
    path = _write(
        tmp_path,
        {"version": 1, "threats": [OUTPUT_INTEGRITY], "controls": {"AML.M0012": ENCRYPTION}},
    )
    model = assess(answers_of("issue", deployment__exposure="partner-api"), load_rules(path))
    assert [t.id for t in model.threats] == ["output-integrity"]


def test_extending_with_a_known_id_replaces_that_threat(tmp_path: Path, answers_of: Any) -> None:
    shipped = yaml.safe_load(default_rules_text())
    evasion = next(t for t in shipped["threats"] if t["id"] == "evasion")
    evasion["likelihood"] = {"base": 1}
    rules = load_rules(_write(tmp_path, {"version": 1, "extends": "builtin", "threats": [evasion]}))
    assert assess(answers_of("issue"), rules).threat("evasion").likelihood.value == 1
    assert len(rules.threats) == len(load_rules().threats)


def test_inconsistent_rules_list_every_problem(tmp_path: Path) -> None:
    broken = dict(
        OUTPUT_INTEGRITY,
        atlas=["AML.T9999"],
        owasp=["ML11"],
        when={"deployment.exposed": "x", "deployment.outputs": "everything"},
        controls=["AML.M0012", "AML.M0004"],
    )
    path = _write(
        tmp_path,
        {
            "version": 1,
            "threats": [broken],
            "controls": {"AML.M0012": dict(ENCRYPTION, audit_checks=["magic"])},
        },
    )
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    msg = str(info.value)
    for expected in (
        "'AML.T9999' is not an ATLAS technique",
        "'ML11' is not an OWASP",
        "unknown answer key 'deployment.exposed'",
        "'deployment.outputs' = 'everything' is not an allowed answer",
        "control 'AML.M0004' has no entry",
        "unknown audit check 'magic'",
    ):
        assert expected in msg


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "version": 1,
            "threats": [dict(OUTPUT_INTEGRITY, likelihood={"base": 9})],
            "controls": {"AML.M0012": ENCRYPTION},
        },
    )
    with pytest.raises(ConfigError, match=r"threats\.0\.likelihood\.base"):
        load_rules(path)
    with pytest.raises(ConfigError, match="not found"):
        load_rules(tmp_path / "missing.yaml")


def test_condition_language() -> None:
    answers = {
        "data.sources": ["internal", "public"],
        "data.personal": True,
        "deployment.exposure": "batch",
    }
    assert matches({"data.sources": ["public", "scraped"]}, answers)
    assert not matches({"data.sources": {"not": ["public"]}}, answers)
    assert matches({"data.personal": True, "deployment.exposure": {"not": "public-api"}}, answers)
    assert not matches({"data.personal": False}, answers)
    assert matches([{"data.personal": False}, {"deployment.exposure": "batch"}], answers)
