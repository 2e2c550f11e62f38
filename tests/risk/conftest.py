"""Fixtures for the risk tests: answer sets built from a baseline by dotted overrides."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlwarden.risk import Answers, ThreatModel, assess, parse_answers

# The system of the issue: a public teacher, linear probe, public API with scores,
# no authentication, personal training data.
ISSUE_SYSTEM: dict[str, Any] = {
    "version": 1,
    "system": {"name": "issue-system"},
    "model": {
        "source": "pretrained-public",
        "transfer_learning": "linear-probe",
        "format": "safetensors",
    },
    "data": {"sources": ["internal"], "personal": True, "retraining": "none"},
    "deployment": {
        "exposure": "public-api",
        "outputs": "scores",
        "authentication": "none",
        "rate_limited": False,
    },
    "impact": {"integrity": "high", "confidentiality": "high", "availability": "medium"},
}

# The quietest system we can describe: everything in-house, batch scoring, no personal data.
QUIET_SYSTEM: dict[str, Any] = {
    "version": 1,
    "model": {"source": "trained-in-house", "transfer_learning": "none", "format": "safetensors"},
    "data": {"sources": ["internal"], "personal": False, "retraining": "none"},
    "deployment": {
        "exposure": "batch",
        "outputs": "label",
        "authentication": "mtls",
        "rate_limited": True,
    },
    "impact": {"integrity": "high", "confidentiality": "high", "availability": "high"},
}


BASES = {"issue": ISSUE_SYSTEM, "quiet": QUIET_SYSTEM}


def build(base: str = "issue", **overrides: Any) -> dict[str, Any]:
    """A base system with overrides: ``build("issue", deployment__exposure="batch")``."""
    data = copy.deepcopy(BASES[base])
    for dunder_key, value in overrides.items():
        section, key = dunder_key.split("__")
        data[section][key] = value
    return data


@pytest.fixture
def answers_data() -> Callable[..., dict[str, Any]]:
    """Raw answers (a dict, as parsed from YAML) of a base system with overrides."""
    return build


@pytest.fixture
def answers_of() -> Callable[..., Answers]:
    def make(base: str = "issue", **overrides: Any) -> Answers:
        return parse_answers(build(base, **overrides), "test")

    return make


@pytest.fixture
def assess_of(answers_of: Callable[..., Answers]) -> Callable[..., ThreatModel]:
    def run(base: str = "issue", **overrides: Any) -> ThreatModel:
        return assess(answers_of(base, **overrides))

    return run


@pytest.fixture
def issue_file(tmp_path: Path) -> Path:
    path = tmp_path / "answers.yaml"
    path.write_text(yaml.safe_dump(ISSUE_SYSTEM), encoding="utf-8")
    return path
