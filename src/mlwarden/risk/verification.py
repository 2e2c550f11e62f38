"""Mark each required control verified, failed or not checked from an audit's results.

A control is verified by the `mlwarden audit` checks its rule names
(``audit_checks``). It is **failed** when one of those checks failed or errored, or
emitted a finding at or above ``fail_severity``; **verified** only when every one of
them ran and passed; **not checked** otherwise (some did not run, or the control is
organisational, so no check can verify it). Partial coverage is never reported as
verified: a backdoor check that did not run is not vouched for by a passing
robustness check.
"""

from __future__ import annotations

from pathlib import Path

from mlwarden.core.errors import InputError
from mlwarden.core.findings import CheckResult, Finding, Report, Severity
from mlwarden.risk.engine import AssessedThreat, ControlStatus, RequiredControl, ThreatModel


def control_status(
    control: RequiredControl,
    checks: list[CheckResult],
    findings: list[Finding],
    fail_severity: Severity = Severity.MEDIUM,
) -> tuple[ControlStatus, str]:
    """The status of one control and a one-line reason."""
    wanted = control.rule.audit_checks
    if not wanted:
        ways = [f"`mlwarden {c}`" for c in control.rule.commands]
        ways += [f"gateway.{g}" for g in control.rule.gateway]
        hint = f"verify with {', '.join(ways)}" if ways else "review it by hand"
        return "not checked", f"no audit check covers it; {hint}"
    results = {c.name: c for c in checks if c.name in wanted}
    ran = [c for c in results.values() if c.status != "skipped"]
    failed = [c.name for c in ran if c.status in ("failed", "error")]
    flagged = sorted(
        {f.check for f in findings if f.check in results and f.severity >= fail_severity}
    )
    bad = sorted(set(failed) | set(flagged))
    if bad:
        return "failed", f"check(s) {', '.join(bad)} failed or reported findings"
    missing = [name for name in wanted if name not in {c.name for c in ran}]
    if missing:
        passed = ", ".join(c.name for c in ran)
        done = f"{passed} passed; " if passed else ""
        sections = " and ".join(f"[checks.{name}]" for name in missing)
        return "not checked", f"{done}enable {sections} in mlwarden.toml"
    return "verified", f"check(s) {', '.join(c.name for c in ran)} passed"


def mark_controls(
    model: ThreatModel,
    checks: list[CheckResult],
    findings: list[Finding],
    fail_severity: Severity = Severity.MEDIUM,
) -> ThreatModel:
    """Fill ``model.control_status`` from the checks and findings of an audit."""
    own = [f for f in findings if f.check != "risk"]
    model.control_status = {
        c.id: control_status(c, checks, own, fail_severity) for c in model.controls
    }
    return model


def load_audit_report(path: str | Path) -> Report:
    """A saved ``mlwarden audit`` JSON report, to mark controls without re-running the checks."""
    path = Path(path)
    try:
        return Report.from_json(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"audit report '{path}' not found") from None
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()[0]
        raise InputError(
            f"audit report '{path}' is not an mlwarden JSON report ({first})",
            hint="write one with: mlwarden audit --format json",
        ) from None


def residual_severity(
    threat: AssessedThreat, model: ThreatModel, unverified: Severity = Severity.LOW
) -> Severity:
    """Severity of a threat after the audit.

    A threat keeps its full severity while one of its controls failed; it drops to
    ``unverified`` (at most) while some control is not checked, and to ``info``
    once every control is verified.
    """
    statuses = [model.control_status.get(c, ("not checked", ""))[0] for c in threat.rule.controls]
    if "failed" in statuses:
        return threat.severity
    if "not checked" in statuses:
        return min(threat.severity, unverified, key=lambda s: s.rank)
    return Severity.INFO
