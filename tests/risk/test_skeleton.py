"""The generated mlwarden.toml: valid TOML, only schema keys, the checks the threats call for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from mlwarden.risk import config_skeleton

TOP_LEVEL = {"model", "data", "audit", "checks", "gateway"}
CHECKS = {"accuracy", "scan", "evasion", "backdoor", "transfer", "privacy", "extraction", "risk"}
KEYS = {
    "model": {"path", "factory"},
    "data": {"source", "limit"},
    "audit": {"fail_on", "formats", "output_dir", "seed"},
    "accuracy": {"min_accuracy"},
    "scan": {"allow"},
    "evasion": {"preset", "eps", "min_robust_accuracy"},
    "transfer": {"teacher", "eps"},
    "backdoor": {"threshold"},
    "privacy": {"members", "non_members", "max_auc"},
    "extraction": {"access", "budget", "max_agreement"},
    "risk": {"answers"},
}


def _parse(text: str) -> dict[str, Any]:
    doc = tomllib.loads(text)
    assert set(doc) <= TOP_LEVEL
    assert set(doc["checks"]) <= CHECKS
    for section in ("model", "data", "audit"):
        assert set(doc[section]) <= KEYS[section]
    for name, table in doc["checks"].items():
        assert set(table) <= KEYS.get(name, set()), name
    gateway = doc.get("gateway", {})
    assert set(gateway) <= {
        "auth",
        "rate_limit",
        "validation",
        "hardening",
        "monitoring",
        "audit_log",
    }
    return doc


def test_issue_system_switches_on_every_model_check(assess_of: Any) -> None:
    doc = _parse(config_skeleton(assess_of("issue"), "answers.yaml"))
    assert set(doc["checks"]) == CHECKS
    assert doc["checks"]["risk"] == {"answers": "answers.yaml"}
    assert doc["checks"]["transfer"] == {"teacher": "teacher.pt2"}
    assert doc["checks"]["extraction"] == {"access": "scores"}  # scores were answered
    assert doc["checks"]["privacy"]["members"] == "train.npz"
    gateway = doc["gateway"]
    assert set(gateway) == {
        "auth",
        "rate_limit",
        "validation",
        "hardening",
        "monitoring",
        "audit_log",
    }
    assert gateway["auth"]["enabled"] is True
    assert gateway["hardening"]["default_output"] == "rounded"  # scores were answered


def test_gateway_tables_validate_against_the_gateway_config(assess_of: Any) -> None:
    from mlwarden.gateway.config import GatewayConfig

    for outputs, level in (("label", "labels"), ("top-k", "top_k"), ("logits", "rounded")):
        doc = _parse(config_skeleton(assess_of("issue", deployment__outputs=outputs)))
        cfg = GatewayConfig.from_dict(doc["gateway"])
        assert cfg.hardening.default_output == level
        assert cfg.auth.enabled and cfg.rate_limit.enabled and cfg.audit_log.enabled
        assert cfg.validation.ood == "reject"
    # an authenticated, rate-limited partner API still gets auth and limits switched on
    partner = assess_of(
        "issue",
        deployment__exposure="partner-api",
        deployment__authentication="mtls",
        deployment__rate_limited=True,
    )
    assert {"auth", "rate_limit"} <= set(_parse(config_skeleton(partner))["gateway"])


def test_quiet_system_switches_on_only_the_baseline(assess_of: Any) -> None:
    text = config_skeleton(assess_of("quiet"))
    doc = _parse(text)
    assert set(doc["checks"]) == {"accuracy", "risk"}
    assert "gateway" not in doc
    assert "# [checks.extraction]" in text  # says what is off and why


def test_checks_follow_the_threats(assess_of: Any) -> None:
    # in-house model behind an authenticated internal API with label outputs, no personal data
    model = assess_of("quiet", deployment__exposure="internal-api", data__personal=False)
    doc = _parse(config_skeleton(model))
    assert {"evasion", "extraction"} <= set(doc["checks"])
    assert doc["checks"]["extraction"]["access"] == "labels"  # label outputs were answered
    assert "privacy" not in doc["checks"]  # no personal data: no membership inference
    assert "transfer" not in doc["checks"]  # no teacher
    assert "scan" not in doc["checks"]  # safetensors trained in-house
    # the same system taking in a pickled public model needs the scan
    risky = assess_of("quiet", model__source="pretrained-public", model__format="pickle")
    assert "scan" in _parse(config_skeleton(risky))["checks"]


def test_skeleton_validates_against_the_audit_config(assess_of: Any, tmp_path: Path) -> None:
    """The lead's config schema accepts the skeleton (checks not registered yet are left out)."""
    from mlwarden.audit.registry import available_checks
    from mlwarden.config import parse_config

    doc = _parse(config_skeleton(assess_of("issue"), "answers.yaml"))
    known = available_checks()
    doc["checks"] = {k: v for k, v in doc["checks"].items() if k in known}
    assert {"accuracy", "scan", "risk"} <= set(doc["checks"])
    cfg = parse_config(doc, base_dir=tmp_path, where="skeleton")
    assert cfg.checks["risk"].answers == "answers.yaml"
    assert cfg.audit.fail_on == "high"


def _uncomment(text: str) -> str:
    """Switch on every commented ``key = value`` suggestion inside a table."""
    out, in_table, seen = [], False, set()
    for line in text.splitlines():
        if line.startswith("["):
            in_table, seen = True, set()
        elif not line.strip():
            in_table = False
        match = re.match(r"^# (\w+) = (.+?)(\s{2,}#.*)?$", line)
        if in_table and match and match.group(1) not in seen:
            line = f"{match.group(1)} = {match.group(2)}"
        if "=" in line and not line.startswith("#"):
            seen.add(line.split("=")[0].strip())
        out.append(line)
    return "\n".join(out)


def test_commented_suggestions_are_valid_settings(assess_of: Any, tmp_path: Path) -> None:
    """Uncommenting a suggestion never produces a key the config schemas refuse."""
    from mlwarden.audit.registry import available_checks
    from mlwarden.config import parse_config
    from mlwarden.gateway.config import GatewayConfig

    doc = _parse(_uncomment(config_skeleton(assess_of("issue"), "answers.yaml")))
    evasion = doc["checks"]["evasion"]
    assert evasion["preset"] == "standard" and evasion["eps"] == [0.03, 0.1]
    assert doc["gateway"]["rate_limit"]["storage"].startswith("redis://")
    GatewayConfig.from_dict(doc["gateway"])
    known = available_checks()
    doc["checks"] = {k: v for k, v in doc["checks"].items() if k in known}
    parse_config(doc, base_dir=tmp_path, where="skeleton")
