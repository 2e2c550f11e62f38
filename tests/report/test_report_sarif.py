"""SARIF 2.1.0 as GitHub code scanning needs it.

No PyPI package ships the official SARIF 2.1.0 JSON schema (``sarif-om`` and
``sarif-tools`` do not), so these tests check the properties GitHub documents as
required, plus the property names the schema allows on every object we emit (the
schema sets ``additionalProperties: false`` on them, so a misspelt key is invalid).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from mlwarden.core.findings import CheckResult, Finding, Report, Severity
from mlwarden.report import render
from mlwarden.report.sarif import artifact_uri, fingerprint, sarif_log

# Allowed keys of each object, from the SARIF 2.1.0 schema (additionalProperties: false).
ALLOWED = {
    "log": {"$schema", "version", "runs", "inlineExternalProperties", "properties"},
    "run": {
        "tool",
        "invocations",
        "conversion",
        "language",
        "versionControlProvenance",
        "originalUriBaseIds",
        "artifacts",
        "logicalLocations",
        "graphs",
        "results",
        "automationDetails",
        "runAggregates",
        "baselineGuid",
        "redactionTokens",
        "defaultEncoding",
        "defaultSourceLanguage",
        "newlineSequences",
        "columnKind",
        "externalPropertyFileReferences",
        "threadFlowLocations",
        "taxonomies",
        "addresses",
        "translations",
        "policies",
        "webRequests",
        "webResponses",
        "specialLocations",
        "properties",
    },
    "driver": {
        "name",
        "fullName",
        "guid",
        "version",
        "semanticVersion",
        "dottedQuadFileVersion",
        "releaseDateUtc",
        "downloadUri",
        "informationUri",
        "organization",
        "product",
        "productSuite",
        "shortDescription",
        "fullDescription",
        "language",
        "globalMessageStrings",
        "notifications",
        "rules",
        "taxa",
        "locations",
        "contents",
        "isComprehensive",
        "localizedDataSemanticVersion",
        "minimumRequiredLocalizedDataSemanticVersion",
        "associatedComponent",
        "translationMetadata",
        "supportedTaxonomies",
        "properties",
    },
    "rule": {
        "id",
        "deprecatedIds",
        "guid",
        "deprecatedGuids",
        "name",
        "deprecatedNames",
        "shortDescription",
        "fullDescription",
        "messageStrings",
        "defaultConfiguration",
        "helpUri",
        "help",
        "relationships",
        "properties",
    },
    "result": {
        "guid",
        "correlationGuid",
        "ruleId",
        "ruleIndex",
        "rule",
        "kind",
        "level",
        "message",
        "analysisTarget",
        "locations",
        "webRequest",
        "webResponse",
        "fingerprints",
        "partialFingerprints",
        "codeFlows",
        "graphs",
        "graphTraversals",
        "stacks",
        "relatedLocations",
        "suppressions",
        "baselineState",
        "rank",
        "attachments",
        "hostedViewerUri",
        "workItemUris",
        "provenance",
        "fixes",
        "taxa",
        "properties",
        "occurrenceCount",
    },
    "location": {
        "id",
        "physicalLocation",
        "logicalLocations",
        "message",
        "annotations",
        "relationships",
        "properties",
    },
    "physicalLocation": {"address", "artifactLocation", "region", "contextRegion", "properties"},
    "artifactLocation": {"uri", "uriBaseId", "index", "description", "properties"},
    "logicalLocation": {
        "name",
        "index",
        "fullyQualifiedName",
        "decoratedName",
        "parentIndex",
        "kind",
        "properties",
    },
    "invocation": {
        "commandLine",
        "arguments",
        "responseFiles",
        "startTimeUtc",
        "endTimeUtc",
        "exitCode",
        "ruleConfigurationOverrides",
        "notificationConfigurationOverrides",
        "toolExecutionNotifications",
        "toolConfigurationNotifications",
        "exitCodeDescription",
        "exitSignalName",
        "exitSignalNumber",
        "processStartFailureMessage",
        "executionSuccessful",
        "machine",
        "account",
        "processId",
        "executableLocation",
        "workingDirectory",
        "environmentVariables",
        "stdin",
        "stdout",
        "stderr",
        "stdoutStderr",
        "properties",
    },
    "notification": {
        "locations",
        "message",
        "level",
        "threadId",
        "timeUtc",
        "exception",
        "descriptor",
        "associatedRule",
        "properties",
    },
    "message": {"text", "markdown", "id", "arguments", "properties"},
}
EXPECTED_SECURITY_SEVERITY = {
    "critical": "9.5",
    "high": "8.0",
    "medium": "5.5",
    "low": "3.0",
    "info": "1.0",
}
EXPECTED_LEVEL = {
    "critical": "error",
    "high": "error",
    "medium": "warning",
    "low": "note",
    "info": "note",
}


def _keys(obj: dict[str, Any], kind: str) -> None:
    extra = set(obj) - ALLOWED[kind]
    assert not extra, f"{kind} has properties SARIF 2.1.0 does not allow: {extra}"


def _strict_loads(text: str) -> Any:
    def no_constants(name: str) -> None:
        raise AssertionError(f"SARIF contains the non-JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def _validate_structure(log: dict[str, Any]) -> None:
    _keys(log, "log")
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    assert len(log["runs"]) == 1
    run = log["runs"][0]
    _keys(run, "run")
    driver = run["tool"]["driver"]
    _keys(driver, "driver")
    assert driver["name"] == "mlwarden" and driver["version"]
    assert driver["informationUri"].startswith("https://")
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)), "rule ids are unique"
    for rule in driver["rules"]:
        _keys(rule, "rule")
        for field in ("shortDescription", "fullDescription"):
            _keys(rule[field], "message")
            assert rule[field]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        sev = rule["properties"]["security-severity"]
        assert isinstance(sev, str) and 0.0 < float(sev) <= 10.0
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    for inv in run["invocations"]:
        _keys(inv, "invocation")
        assert isinstance(inv["executionSuccessful"], bool)
        for note in inv.get("toolExecutionNotifications", []):
            _keys(note, "notification")
    for result in run["results"]:
        _keys(result, "result")
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        assert result["partialFingerprints"]
        assert len(result["locations"]) >= 1, "GitHub requires a location per result"
        for loc in result["locations"]:
            _keys(loc, "location")
            phys = loc["physicalLocation"]
            _keys(phys, "physicalLocation")
            _keys(phys["artifactLocation"], "artifactLocation")
            uri = phys["artifactLocation"]["uri"]
            assert "\\" not in uri and uri
            assert phys["region"]["startLine"] >= 1
            for logical in loc.get("logicalLocations", []):
                _keys(logical, "logicalLocation")


def test_sample_report_is_structurally_valid_sarif(sample_report: Report) -> None:
    log = _strict_loads(render(sample_report, "sarif"))
    _validate_structure(log)
    run = log["runs"][0]
    assert len(run["results"]) == len(sample_report.findings)
    assert run["properties"]["metrics"]["clean_accuracy"] == pytest.approx(0.9733)


def test_levels_and_security_severity_follow_the_finding_severity(sample_report) -> None:
    log = sarif_log(sample_report)
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    by_id = {f.id: f for f in sample_report.findings}
    seen = set()
    for result in log["runs"][0]["results"]:
        sev = by_id[result["ruleId"]].severity.value
        seen.add(sev)
        assert result["level"] == EXPECTED_LEVEL[sev]
        assert (
            rules[result["ruleId"]]["properties"]["security-severity"]
            == (EXPECTED_SECURITY_SEVERITY[sev])
        )
        assert result["properties"]["severity"] == sev
    assert seen == {s.value for s in Severity}


def test_rule_tags_carry_atlas_and_owasp_ids(sample_report) -> None:
    rules = {r["id"]: r for r in sarif_log(sample_report)["runs"][0]["tool"]["driver"]["rules"]}
    tags = rules["MLW-SUP-001"]["properties"]["tags"]
    assert {"security", "ATLAS:AML.T0010", "ATLAS:AML.T0011", "OWASP:ML06"} <= set(tags)
    assert "`ATLAS:AML.T0010`" in rules["MLW-SUP-001"]["help"]["markdown"]


def test_one_rule_per_id_with_the_worst_severity() -> None:
    report = Report(
        findings=[
            Finding(id="MLW-X-1", title="weak", severity="low", atlas=["AML.T0043"]),
            Finding(id="MLW-X-1", title="weak again", severity="critical", owasp=["ML01"]),
            Finding(id="MLW-Y-2", title="other", severity="medium"),
        ]
    )
    log = sarif_log(report)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == ["MLW-X-1", "MLW-Y-2"]
    assert rules[0]["properties"]["security-severity"] == "9.5"
    assert {"ATLAS:AML.T0043", "OWASP:ML01"} <= set(rules[0]["properties"]["tags"])
    assert [r["ruleIndex"] for r in log["runs"][0]["results"]] == [0, 0, 1]
    assert [r["level"] for r in log["runs"][0]["results"]] == ["note", "error", "warning"]


def test_tags_are_capped_at_githubs_limit() -> None:
    report = Report(
        findings=[
            Finding(id="A", title="t", severity="low", atlas=[f"AML.T{i:04d}" for i in range(40)])
        ]
    )
    tags = sarif_log(report)["runs"][0]["tool"]["driver"]["rules"][0]["properties"]["tags"]
    assert len(tags) == 20 and tags[:3] == ["security", "machine-learning", "ATLAS:AML.T0000"]


def _loc(report: Report, index: int = 0) -> dict[str, Any]:
    return sarif_log(report)["runs"][0]["results"][index]["locations"][0]


def test_file_member_location_is_the_container_plus_a_logical_member(sample_report) -> None:
    idx = next(i for i, f in enumerate(sample_report.findings) if f.id == "MLW-SUP-001")
    loc = _loc(sample_report, idx)
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "models/teacher.pt"
    assert loc["logicalLocations"][0]["name"] == "archive/data.pkl"


def test_endpoint_location_is_logical_and_placed_on_the_subject_model(sample_report) -> None:
    idx = next(i for i, f in enumerate(sample_report.findings) if f.id == "MLW-GW-003")
    loc = _loc(sample_report, idx)
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "models/teacher.pt2"
    assert loc["logicalLocations"][0]["fullyQualifiedName"] == "POST /v1/predict"


def test_without_any_file_a_placeholder_keeps_github_happy() -> None:
    report = Report(
        subject={"model": "https://gateway.example/v1/predict"},
        findings=[Finding(id="A", title="t", severity="high")],
    )
    loc = _loc(report)
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == "mlwarden.toml"


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        ("models/teacher.pt", "models/teacher.pt"),
        ("./models//teacher.pt", "models/teacher.pt"),
        ("models\\win\\teacher.pt", "models/win/teacher.pt"),
        ("my models/teacher v2.pt", "my%20models/teacher%20v2.pt"),
        ("model.onnx", "model.onnx"),
        ("https://host/v1/predict", None),
        ("POST /v1/predict", None),
        ("mypkg.models:make_net", None),
        ("layer conv1.weight", None),
        ("/predict", None),
    ],
)
def test_artifact_uri(text: str, uri: str | None) -> None:
    assert artifact_uri(text) == uri


def test_absolute_paths_become_relative_to_the_base_dir(tmp_path: Path) -> None:
    inside = tmp_path / "models" / "m.safetensors"
    assert artifact_uri(str(inside), base_dir=tmp_path) == "models/m.safetensors"
    assert artifact_uri("file://" + str(inside), base_dir=tmp_path) == "models/m.safetensors"
    outside = artifact_uri("/opt/elsewhere/m.pt", base_dir=tmp_path)
    assert outside == "file:///opt/elsewhere/m.pt"
    # render() uses the working directory as the repository root
    cwd = Path(os.getcwd())
    report = Report(
        findings=[Finding(id="A", title="t", severity="low", location=str(cwd / "sub" / "x.pkl"))]
    )
    assert _loc(report)["physicalLocation"]["artifactLocation"]["uri"] == "sub/x.pkl"


def test_fingerprints_are_stable_across_runs_and_numbers_but_not_problems() -> None:
    a = Finding(
        id="MLW-EVA-002",
        title="PGD robust accuracy 12.0% at eps=0.1",
        severity="high",
        check="evasion",
        detail="run 1",
    )
    b = dataclasses.replace(a, title="PGD robust accuracy 14.5% at eps=0.1", detail="run 2")
    c = dataclasses.replace(a, title="FGSM robust accuracy 12.0% at eps=0.1")
    d = dataclasses.replace(a, location="models/other.pt")
    assert fingerprint(a) == fingerprint(b)
    assert len({fingerprint(a), fingerprint(c), fingerprint(d)}) == 3
    r1 = sarif_log(Report(findings=[a]))["runs"][0]["results"][0]["partialFingerprints"]
    r2 = sarif_log(Report(findings=[b]))["runs"][0]["results"][0]["partialFingerprints"]
    assert r1 == r2


def test_errored_checks_mark_the_invocation_and_notify(sample_report) -> None:
    inv = sarif_log(sample_report)["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    assert inv["endTimeUtc"] == "2026-11-22T20:30:00Z"
    notes = {n["descriptor"]["id"]: n for n in inv["toolExecutionNotifications"]}
    assert (
        notes["extraction"]["level"] == "error"
        and "HTTP 500" in notes["extraction"]["message"]["text"]
    )
    assert notes["membership"]["level"] == "note"
    ok = Report(checks=[CheckResult(name="accuracy", status="passed")])
    assert sarif_log(ok)["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_non_finite_numbers_and_empty_reports_stay_valid_json() -> None:
    report = Report(
        metrics={"auc": float("nan"), "norm": float("inf")},
        findings=[Finding(id="A", title="t", severity="info", evidence={"x": float("-inf")})],
    )
    log = _strict_loads(render(report, "sarif"))
    _validate_structure(log)
    assert log["runs"][0]["properties"]["metrics"] == {"auc": "NaN", "norm": "Infinity"}
    empty = _strict_loads(render(Report(), "sarif"))
    _validate_structure(empty)
    assert empty["runs"][0]["results"] == [] and empty["runs"][0]["tool"]["driver"]["rules"] == []
