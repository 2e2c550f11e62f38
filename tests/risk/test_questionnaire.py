"""The answers schema: template round-trip and one clear line for every invalid answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlwarden.core.errors import InputError
from mlwarden.risk import QUESTIONS, SCHEMA_VERSION, load_answers, parse_answers, template_yaml
from mlwarden.risk.questionnaire import answers_to_yaml, json_schema

REQUIRED_NAMES = {
    "model.source": {"trained-in-house", "pretrained-public", "pretrained-vendor"},
    "model.transfer_learning": {"none", "linear-probe", "partial-fine-tune", "full-fine-tune"},
    "data.sources": {"internal", "public", "user-submitted", "scraped", "third-party"},
    "data.retraining": {"none", "periodic", "continuous-from-production"},
    "deployment.exposure": {"public-api", "partner-api", "internal-api", "on-device", "batch"},
    "deployment.outputs": {"label", "top-k", "scores", "logits"},
    "deployment.authentication": {"none", "api-key", "oauth", "mtls"},
    "impact.integrity": {"low", "medium", "high"},
    "impact.confidentiality": {"low", "medium", "high"},
    "impact.availability": {"low", "medium", "high"},
}


@pytest.mark.parametrize("key", sorted(REQUIRED_NAMES))
def test_questionnaire_accepts_the_documented_answers(key: str) -> None:
    assert set(QUESTIONS[key].choices) == REQUIRED_NAMES[key]


def test_boolean_answers_exist() -> None:
    assert QUESTIONS["data.personal"].kind == "bool"
    assert QUESTIONS["deployment.rate_limited"].kind == "bool"


def test_template_is_commented_and_valid() -> None:
    text = template_yaml()
    answers = parse_answers(yaml.safe_load(text))
    assert answers.version == SCHEMA_VERSION
    for key, q in QUESTIONS.items():
        if q.kind in ("choice", "multi"):
            assert f"# Allowed: {q.allowed}" in text, key
    assert "EXAMPLE" in text


def test_answers_round_trip_through_yaml(answers_data: Any) -> None:
    data = answers_data("quiet", data__sources=["public", "scraped"])
    again = parse_answers(yaml.safe_load(answers_to_yaml(data)))
    assert again == parse_answers(data)
    assert again.data.sources == ["public", "scraped"]


def _error(data: Any) -> str:
    with pytest.raises(InputError) as info:
        parse_answers(data, "answers.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_value_names_key_and_allowed_values(answers_data: Any) -> None:
    msg = _error(answers_data(deployment__exposure="publik-api"))
    assert "deployment.exposure" in msg and "'publik-api'" in msg
    assert "public-api | partner-api | internal-api | on-device | batch" in msg


def test_missing_required_answer_is_named(answers_data: Any) -> None:
    data = answers_data()
    del data["impact"]["integrity"]
    msg = _error(data)
    assert "missing required answer 'impact.integrity'" in msg and "low | medium | high" in msg


def test_missing_section_is_named(answers_data: Any) -> None:
    data = answers_data()
    del data["deployment"]
    assert "missing section 'deployment'" in _error(data)


def test_wrong_types_are_named(answers_data: Any) -> None:
    msg = _error(answers_data(data__personal="sometimes"))
    assert "data.personal" in msg and "true | false" in msg
    msg = _error(answers_data(data__sources="internal"))
    assert "'data.sources' must be a list of one or more of: internal | public" in msg
    assert "[" not in msg  # Rich would swallow [..] as markup in the CLI's error line
    msg = _error(answers_data(data__sources=["internal", "darkweb"]))
    assert "data.sources[1]" in msg and "'darkweb'" in msg


def test_every_problem_is_reported_at_once(answers_data: Any) -> None:
    msg = _error(answers_data(model__source="github", deployment__outputs="everything"))
    assert "model.source" in msg and "deployment.outputs" in msg


def test_unknown_key_is_refused_with_the_known_ones(answers_data: Any) -> None:
    data = answers_data()
    data["deployment"]["exposed"] = "public-api"
    msg = _error(data)
    assert "unknown answer 'deployment.exposed'" in msg and "exposure" in msg


def test_unsupported_version_is_refused(answers_data: Any) -> None:
    data = answers_data()
    data["version"] = 2
    assert "questionnaire version 1" in _error(data)


def test_not_a_mapping_is_refused() -> None:
    assert "expected a mapping" in _error(["model", "data"])


def test_load_answers_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_answers(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_answers(bad)


def test_yaml_tags_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(
        f"model: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8"
    )
    with pytest.raises(InputError):
        load_answers(hostile)
    assert not marker.exists()


def test_json_schema_lists_allowed_values() -> None:
    schema = json.loads(json.dumps(json_schema()))
    text = json.dumps(schema)
    assert "continuous-from-production" in text and "pretrained-vendor" in text
    assert set(schema["required"]) >= {"model", "data", "deployment", "impact"}


BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
)


@pytest.mark.parametrize("where", ["version", "model.source", "data.sources", "system.name"])
def test_alias_bomb_is_refused_quickly(tmp_path: Path, answers_data: Any, where: str) -> None:
    """A billion-laughs document (9**9 leaves) fails with a short message, not an OOM."""
    data = answers_data()
    if "." in where:
        section, key = where.split(".")
        data[section][key] = "BOMB"
    else:
        data["version"] = "BOMB"
    text = yaml.safe_dump(data).replace("BOMB", "*i")
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "\n" + text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_answers(path)
    assert len(str(info.value)) < 2000


def test_deeply_nested_and_oversized_files_are_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 600 + "]" * 600, encoding="utf-8")
    with pytest.raises(InputError):
        load_answers(deep)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (300 * 1024), encoding="utf-8")
    with pytest.raises(InputError, match="larger than"):
        load_answers(big)
