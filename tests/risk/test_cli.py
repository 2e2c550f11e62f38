"""`mlwarden risk ...` end to end: files, formats, exit codes, no torch, commands that exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from mlwarden.cli.main import app, run
from mlwarden.core.findings import Report
from mlwarden.risk import load_answers, load_rules


def _run(argv: list[str]) -> int:
    """Run the real entry point (errors become one line and an exit code)."""
    try:
        run(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_init_template_then_assess(tmp_path: Path, capsys: Any) -> None:
    answers = tmp_path / "answers.yaml"
    assert _run(["risk", "init", "--template", "-o", str(answers)]) == 0
    assert load_answers(answers).model.source == "pretrained-public"
    assert _run(["risk", "init", "--template", "-o", str(answers)]) == 2
    assert "--force" in capsys.readouterr().err
    assert _run(["risk", "assess", str(answers)]) == 0
    out = capsys.readouterr().out
    assert "AML.T0024.002" in out and "AML.M0004" in out  # register and checklist


def test_interactive_init_writes_valid_answers(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    lines = [
        "shop-vision",
        "",  # system.name, system.owner
        "pretrained-vendor",
        "full-fine-tune",
        "onnx",
        "internal, third-party, bogus",  # refused: 'bogus' is not allowed
        "internal, third-party",
        "n",
        "periodic",
        "partner-api",
        "top-k",
        "api-key",
        "y",
        "medium",
        "high",
        "low",
    ]
    result = CliRunner().invoke(
        app, ["risk", "init", "-o", str(answers)], input="\n".join(lines) + "\n"
    )
    assert result.exit_code == 0, result.output
    assert "choose one or more of" in result.output
    loaded = load_answers(answers)
    assert loaded.system.name == "shop-vision"
    assert loaded.data.sources == ["internal", "third-party"]
    assert loaded.data.personal is False and loaded.deployment.rate_limited is True
    assert loaded.impact.confidentiality == "high"
    assert "# Allowed:" in answers.read_text(encoding="utf-8")


def test_interrupted_questionnaire_writes_nothing(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    result = CliRunner().invoke(app, ["risk", "init", "-o", str(answers)], input="only-a-name\n")
    assert result.exit_code != 0
    assert not answers.exists()


def test_assess_json_and_config_skeleton(issue_file: Path, tmp_path: Path) -> None:
    out, toml = tmp_path / "risk.json", tmp_path / "mlwarden.toml"
    code = _run(
        ["risk", "assess", str(issue_file), "-f", "json", "-o", str(out), "--config-out", str(toml)]
    )
    assert code == 0
    report = Report.from_json(out.read_text(encoding="utf-8"))
    ids = {f.id for f in report.findings}
    assert {"MLW-RISK-MODEL-EXTRACTION", "MLW-RISK-MEMBERSHIP-INFERENCE"} <= ids
    extraction = next(f for f in report.findings if f.id == "MLW-RISK-MODEL-EXTRACTION")
    assert extraction.atlas == ["AML.T0024.002"] and extraction.owasp == ["ML05"]
    assert {t.id for t in report.tables} == {
        "risk-threat-register",
        "risk-security-requirements",
        "risk-ncsc-principles",
    }
    import tomllib

    doc = tomllib.loads(toml.read_text(encoding="utf-8"))
    assert doc["checks"]["risk"]["answers"] == "answers.yaml"  # relative to the toml


def test_assess_sarif_md_html(issue_file: Path, tmp_path: Path) -> None:
    sarif = tmp_path / "risk.sarif"
    assert _run(["risk", "assess", str(issue_file), "-f", "sarif", "-o", str(sarif)]) == 0
    doc = json.loads(sarif.read_text(encoding="utf-8"))
    results = doc["runs"][0]["results"]
    assert "MLW-RISK-MODEL-EXTRACTION" in {r["ruleId"] for r in results}
    assert "AML.T0024.002" in json.dumps(doc)
    md = tmp_path / "risk.md"
    assert _run(["risk", "assess", str(issue_file), "-f", "md", "-o", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "Threat register" in text and "Security requirements checklist" in text
    html = tmp_path / "risk.html"
    assert _run(["risk", "assess", str(issue_file), "-f", "html", "-o", str(html)]) == 0
    assert "AML.M0019" in html.read_text(encoding="utf-8")


def test_fail_on_exit_code(issue_file: Path) -> None:
    assert _run(["risk", "assess", str(issue_file), "-f", "json", "-o", "/dev/null"]) == 0
    assert (
        _run(
            [
                "risk",
                "assess",
                str(issue_file),
                "-f",
                "json",
                "-o",
                "/dev/null",
                "--fail-on",
                "high",
            ]
        )
        == 1
    )
    assert _run(["risk", "assess", str(issue_file), "--fail-on", "severe"]) == 2


def test_invalid_answers_give_one_line_and_exit_2(
    tmp_path: Path, answers_data: Any, capsys: Any
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(answers_data(deployment__outputs="probabilities")), encoding="utf-8"
    )
    assert _run(["risk", "assess", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert "deployment.outputs" in err and "label | top-k | scores | logits" in err


def test_rules_schema_and_catalogue_commands(tmp_path: Path, capsys: Any) -> None:
    assert _run(["risk", "rules"]) == 0
    shipped = tmp_path / "rules.yaml"
    shipped.write_text(capsys.readouterr().out, encoding="utf-8")
    assert _run(["risk", "rules", "--check", str(shipped)]) == 0
    assert "all ids valid" in capsys.readouterr().out
    assert _run(["risk", "schema"]) == 0
    assert (
        "pretrained-public"
        in json.loads(capsys.readouterr().out)["$defs"]["ModelAnswers"]["properties"]["source"][
            "enum"
        ]
    )
    assert _run(["risk", "catalogue", "AML.T0024"]) == 0
    out = capsys.readouterr().out
    assert "AML.T0024.002" in out and "AML.T0018" not in out


def test_risk_commands_do_not_import_torch(tmp_path: Path, issue_file: Path) -> None:
    commands = [
        ["risk", "init", "--template", "-o", str(tmp_path / "a.yaml")],
        ["risk", "assess", str(issue_file), "-f", "json", "-o", str(tmp_path / "r.json"),
         "--config-out", str(tmp_path / "m.toml")],
        ["risk", "catalogue", "poison"],
    ]  # fmt: skip
    script = f"""
import sys
from mlwarden.cli.main import run
for argv in {commands!r}:
    try:
        run(argv)
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)
print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH"
    assert (tmp_path / "r.json").is_file() and (tmp_path / "m.toml").is_file()


# -- every check a control points to exists ------------------------------------------------

# Commands other engineers are still writing when this test was written; strict xfail turns
# into a failure the moment one lands, so remove it from this set then.
PENDING_COMMANDS: set[str] = set()
PENDING_CHECKS: set[str] = set()


def _cli_paths() -> set[str]:
    paths: set[str] = set()

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        if prefix:
            paths.add(prefix)

    walk(typer.main.get_command(app), "")
    return paths


def _param(name: str, pending: set[str]) -> Any:
    marks = (
        [pytest.mark.xfail(strict=True, reason="being written by another engineer")]
        if name in pending
        else []
    )
    return pytest.param(name, marks=marks, id=name)


RULE_COMMANDS = sorted(load_rules().all_commands())
RULE_CHECKS = sorted(
    {c for ctl in load_rules().controls.values() for c in ctl.audit_checks}
    | {c for t in load_rules().threats for c in t.checks}
)


@pytest.mark.parametrize("command", [_param(c, PENDING_COMMANDS) for c in RULE_COMMANDS])
def test_every_command_a_control_points_to_exists(command: str) -> None:
    assert command in _cli_paths()


@pytest.mark.parametrize("check", [_param(c, PENDING_CHECKS) for c in RULE_CHECKS])
def test_every_audit_check_a_rule_points_to_is_registered(check: str) -> None:
    from mlwarden.audit.registry import available_checks

    assert check in available_checks()


def test_risk_group_is_registered() -> None:
    assert {
        "risk init",
        "risk assess",
        "risk schema",
        "risk rules",
        "risk catalogue",
    } <= _cli_paths()


def test_assess_marks_controls_from_a_saved_audit_report(
    issue_file: Path, tmp_path: Path, capsys: Any
) -> None:
    from mlwarden.core.findings import CheckResult, Finding, Severity

    saved = Report(
        checks=[
            CheckResult(name="scan", status="passed"),
            CheckResult(name="evasion", status="failed"),
            CheckResult(name="risk", status="passed"),
        ],
        findings=[
            Finding(id="MLW-EVA-001", title="low robust accuracy", severity=Severity.HIGH,
                    check="evasion"),
            # an older threat register in the saved report must not mark anything
            Finding(id="MLW-RISK-EVASION", title="old", severity=Severity.CRITICAL, check="risk"),
        ],
    )  # fmt: skip
    audit_json = tmp_path / "audit.json"
    saved.save_json(audit_json)
    out = tmp_path / "risk.json"
    code = _run(["risk", "assess", str(issue_file), "--audit-report", str(audit_json),
                 "-f", "json", "-o", str(out), "--fail-on", "high"])  # fmt: skip
    assert code == 1  # the evasion control failed: that threat keeps its severity
    report = Report.from_json(out.read_text(encoding="utf-8"))
    table = next(t for t in report.tables if t.id == "risk-security-requirements")
    status = {row[1]: row[table.columns.index("status")] for row in table.rows}
    assert status["AML.M0014"] == "verified" and status["AML.M0003"] == "failed"
    by_id = {f.id: f for f in report.findings}
    assert by_id["MLW-RISK-EVASION"].severity >= Severity.HIGH
    assert by_id["MLW-RISK-ANONYMOUS-API-ACCESS"].severity is Severity.LOW
    assert report.metrics["risk_controls_verified"] == 2
    # a file that is not a report: one line, exit 2
    assert _run(["risk", "assess", str(issue_file), "--audit-report", str(issue_file)]) == 2
    assert "is not an mlwarden JSON report" in capsys.readouterr().err


def test_assess_says_so_when_no_threat_applies(
    tmp_path: Path, answers_data: Any, capsys: Any
) -> None:
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text(yaml.safe_dump(answers_data("quiet")), encoding="utf-8")
    assert _run(["risk", "assess", str(quiet), "--fail-on", "info"]) == 0
    assert "no threat in the rules applies" in capsys.readouterr().out
