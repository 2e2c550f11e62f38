"""The `risk` audit check: threat register plus controls verified from the audit's own results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlwarden.audit.registry import AuditContext, check_spec
from mlwarden.core.findings import CheckResult, Finding, Report, Severity
from mlwarden.risk.check import RiskCheck, risk_check


def _ctx(tmp_path: Path, checks: list[CheckResult], findings: list[Finding]) -> AuditContext:
    return AuditContext(
        base_dir=tmp_path,
        output_dir=tmp_path / "out",
        report=Report(checks=checks, findings=findings),
    )


def _statuses(report: Report) -> dict[str, str]:
    table = next(t for t in report.tables if t.id == "risk-security-requirements")
    control, status = table.columns.index("control"), table.columns.index("status")
    return {row[control]: row[status] for row in table.rows}


def test_risk_check_is_registered_to_run_last() -> None:
    spec = check_spec("risk")
    assert spec.config is RiskCheck and spec.cost >= 1000


def test_controls_are_marked_from_the_other_checks(tmp_path: Path, answers_data: Any) -> None:
    (tmp_path / "answers.yaml").write_text(
        yaml.safe_dump(answers_data("issue", model__format="pickle")), encoding="utf-8"
    )
    checks = [
        CheckResult(name="scan", status="passed"),
        CheckResult(name="evasion", status="failed"),
        CheckResult(name="backdoor", status="passed"),
        CheckResult(name="privacy", status="skipped"),
    ]
    findings = [
        Finding(
            id="MLW-EVA-001",
            title="robust accuracy too low",
            severity=Severity.HIGH,
            check="evasion",
        )
    ]
    ctx = _ctx(tmp_path, checks, findings)
    risk_check(ctx, RiskCheck(answers="answers.yaml"))
    status = _statuses(ctx.report)
    assert status["AML.M0014"] == "verified"  # scan passed
    assert status["AML.M0003"] == "failed"  # evasion failed
    assert status["AML.M0008"] == "failed"  # backdoor passed but evasion failed
    assert status["AML.M0019"] == "not checked"  # gateway auth: no audit check
    assert status["AML.M0002"] == "not checked"  # privacy skipped, extraction not run

    by_id = {f.id: f for f in ctx.report.findings if f.check == "risk"}
    # every control of the pickle threat was verified by the scan: residual info
    assert by_id["MLW-RISK-UNSAFE-MODEL-ARTEFACT"].severity is Severity.INFO
    assert by_id["MLW-RISK-UNSAFE-MODEL-ARTEFACT"].evidence["inherent_severity"] == "critical"
    # a failed control keeps the full severity
    evasion = by_id["MLW-RISK-EVASION"]
    assert evasion.severity >= Severity.HIGH and "Failed controls: AML.M0003" in evasion.detail
    # controls not checked yet cap the threat at low
    assert by_id["MLW-RISK-ANONYMOUS-API-ACCESS"].severity is Severity.LOW
    assert ctx.report.metrics["risk_controls_failed"] >= 2
    assert ctx.report.subject["risk_system"] == "issue-system"
    register = next(t for t in ctx.report.tables if t.id == "risk-threat-register")
    assert "residual" in register.columns


def test_partial_coverage_is_not_verified(tmp_path: Path, issue_file: Path) -> None:
    checks = [
        CheckResult(name="accuracy", status="passed"),
        CheckResult(name="evasion", status="passed"),
    ]
    ctx = _ctx(tmp_path, checks, [])
    risk_check(ctx, RiskCheck(answers=str(issue_file)))
    table = next(t for t in ctx.report.tables if t.id == "risk-security-requirements")
    rows = {row[1]: row for row in table.rows}
    # AML.M0008 needs backdoor, evasion and accuracy: the backdoor check did not run
    assert rows["AML.M0008"][table.columns.index("status")] == "not checked"
    note = rows["AML.M0008"][table.columns.index("note")]
    assert "accuracy, evasion passed" in note and "[checks.backdoor]" in note
    assert rows["AML.M0008"][table.columns.index("done")] == "[ ]"
    poisoned = next(f for f in ctx.report.findings if f.id == "MLW-RISK-MODEL-POISONING")
    assert poisoned.severity is Severity.LOW


def test_a_verifying_check_with_serious_findings_fails_its_control(
    tmp_path: Path, issue_file: Path
) -> None:
    checks = [CheckResult(name="scan", status="passed")]
    findings = [
        Finding(
            id="MLW-SCAN-001",
            title="pickle imports os.system",
            severity=Severity.CRITICAL,
            check="scan",
        )
    ]
    ctx = _ctx(tmp_path, checks, findings)
    risk_check(ctx, RiskCheck(answers=str(issue_file)))
    assert _statuses(ctx.report)["AML.M0014"] == "failed"


def test_audit_runner_includes_the_threat_register(tmp_path: Path, issue_file: Path) -> None:
    from mlwarden.audit.runner import run_audit
    from mlwarden.config import parse_config

    cfg = parse_config(
        {
            "audit": {"output_dir": "report", "formats": ["json", "md"]},
            "checks": {"risk": {"answers": issue_file.name}},
        },
        base_dir=tmp_path,
        where="test",
    )
    outcome = run_audit(cfg)
    report = outcome.report
    assert [c.name for c in report.checks] == ["risk"] and report.checks[0].status == "passed"
    assert {t.id for t in report.tables} >= {"risk-threat-register", "risk-security-requirements"}
    # nothing verified yet: every threat is capped at low, every control is open
    assert all(f.severity <= Severity.LOW for f in report.findings)
    assert set(_statuses(report).values()) == {"not checked"}
    assert "Threat register" in outcome.files["md"].read_text(encoding="utf-8")
    assert Report.from_json(outcome.files["json"].read_text(encoding="utf-8")).tables


def _audit_with_scan(tmp_path: Path, model_file: str, answers: dict[str, Any]) -> Report:
    from mlwarden.audit.runner import run_audit
    from mlwarden.config import parse_config

    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers), encoding="utf-8")
    cfg = parse_config(
        {
            "model": {"path": model_file},
            "audit": {"output_dir": "report", "formats": ["json"]},
            "checks": {"scan": {}, "risk": {"answers": "answers.yaml"}},
        },
        base_dir=tmp_path,
        where="test",
    )
    return run_audit(cfg).report


def test_a_real_scan_verifies_or_fails_the_supply_chain_controls(
    tmp_path: Path, answers_data: Any
) -> None:
    """End to end with the real scanner: a clean safetensors file verifies the controls, a
    pickle that calls os.system fails them and keeps the threat at full severity."""
    import pickle

    import numpy as np
    from safetensors.numpy import save_file

    answers = answers_data("issue", model__format="pickle")
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path / "clean.safetensors"))
    clean = _audit_with_scan(tmp_path, "clean.safetensors", answers)
    assert _statuses(clean)["AML.M0014"] == "verified"
    by_id = {f.id: f for f in clean.findings}
    assert by_id["MLW-RISK-UNSAFE-MODEL-ARTEFACT"].severity is Severity.INFO

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            import os

            return (os.system, ("echo owned",))

    # written, never loaded: the scanner reads opcodes only
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    evil = _audit_with_scan(tmp_path, "evil.pkl", answers)
    assert any(f.check == "scan" and f.severity >= Severity.HIGH for f in evil.findings)
    assert _statuses(evil)["AML.M0016"] == "failed"
    by_id = {f.id: f for f in evil.findings}
    assert by_id["MLW-RISK-UNSAFE-MODEL-ARTEFACT"].severity is Severity.CRITICAL
