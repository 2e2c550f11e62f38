"""The one decision of pass or fail: a check's status and the report's verdict.

A check that ran *failed* when one of its findings is at or above ``fail_on``; the
report *fails* when a check failed or could not run (fail closed: an errored check
proved nothing), when checks were asked for and every one was skipped (none ran, so none
passed), or when a finding no check claims is at or above ``fail_on``. The
audit runner, every renderer (terminal, HTML, Markdown, JUnit, SARIF), the exit code
of the CLI and the pytest plugin all ask this module, so they cannot disagree.

Torch-free, like the rest of `mlwarden.core.findings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mlwarden.core.finding import FAIL_ON_CHOICES as FAIL_ON_CHOICES
from mlwarden.core.finding import fail_threshold as fail_threshold
from mlwarden.core.findings import CheckResult, CheckStatus, Finding, Report, Severity

#: The ``--fail-on`` of every command that does not say otherwise (one place for it).
DEFAULT_FAIL_ON = "high"

def fail_on_name(threshold: Severity | None) -> str:
    return threshold.value if threshold is not None else "never"


def check_status(
    ran: CheckStatus, findings: Iterable[Finding], fail_on: Severity | None
) -> CheckStatus:
    """The status of one check from how it ran and what it found.

    ``ran`` is ``error`` or ``skipped`` (kept as they are) or ``passed``/``failed``
    (it ran: the findings decide). A check that ran fails when any of its findings is
    at or above ``fail_on``; with ``fail_on=None`` (``never``) it passes.
    """
    if ran in ("error", "skipped"):
        return ran
    if fail_on is not None and any(f.severity >= fail_on for f in findings):
        return "failed"
    return "passed"


def report_threshold(report: Report) -> Severity | None:
    """The ``fail_on`` the report records, else the default (reports from before it was kept)."""
    return fail_threshold(report.fail_on if report.fail_on is not None else DEFAULT_FAIL_ON)


def _by_check(report: Report) -> tuple[dict[str, list[Finding]], list[Finding]]:
    names = {c.name for c in report.checks}
    claimed: dict[str, list[Finding]] = {name: [] for name in names}
    orphans: list[Finding] = []
    for finding in report.findings:
        if finding.check in names:
            claimed[finding.check].append(finding)
        else:
            orphans.append(finding)
    return claimed, orphans


def resolved_checks(report: Report) -> list[CheckResult]:
    """The report's checks with their status derived from findings and its ``fail_on``.

    Renderers show these, never the stored status alone: a report re-rendered at
    another ``fail_on`` (``mlwarden report render --fail-on``) says the same thing in
    every format.
    """
    threshold = report_threshold(report)
    claimed, _ = _by_check(report)
    out = []
    for check in report.checks:
        findings = claimed[check.name]
        status = check_status(check.status, findings, threshold)
        if status == check.status:
            out.append(check)
            continue
        at = fail_on_name(threshold)
        above = sum(f.severity >= threshold for f in findings) if threshold is not None else 0
        summary = (
            f"{above} finding(s) at or above {at}"
            if status == "failed"
            else f"{len(findings)} finding(s), none at or above {at}"
        )
        out.append(check.model_copy(update={"status": status, "summary": summary}))
    return out


@dataclass(frozen=True)
class Verdict:
    """Pass or fail of a whole report, with the counts its one line states."""

    passed: bool
    fail_on: Severity | None
    checks: int
    failed: int
    errored: int
    skipped: int
    findings: int
    at_or_above: int
    """Findings at or above ``fail_on`` (0 when failing is off)."""
    worst: Severity | None
    unclaimed: int = 0
    """Findings at or above ``fail_on`` that no check result claims (``mlwarden scan``'s)."""

    @property
    def exit_code(self) -> int:
        """1 when the verdict is FAILED, else 0 (the CLI's contract)."""
        return 0 if self.passed else 1

    @property
    def word(self) -> str:
        if self.fail_on is None:
            return "NOT ENFORCED"
        return "PASSED" if self.passed else "FAILED"

    def reason(self) -> str:
        """Why, in words: ``"2 of 4 checks failed at --fail-on high"``."""
        at = f"--fail-on {fail_on_name(self.fail_on)}"
        found = (
            f"{self.findings} finding{'s' if self.findings != 1 else ''}, worst {self.worst.value}"
            if self.worst is not None
            else "no findings"
        )
        if self.fail_on is None:
            return f"{at}; {found}"
        parts: list[str] = []
        if self.checks:
            if self.failed:
                parts.append(f"{self.failed} of {self.checks} checks failed at {at}")
            if self.errored:
                parts.append(f"{self.errored} of {self.checks} could not run")
            if self.skipped == self.checks:
                parts.append(f"none of the {self.checks} checks ran (nothing was proved)")
            elif not self.failed and not self.errored:
                ran = self.checks - self.skipped
                parts.append(
                    f"all {ran} checks that ran passed at {at}"
                    if self.skipped
                    else f"all {self.checks} checks passed at {at}"
                )
            if self.skipped:
                parts.append(f"{self.skipped} skipped")
            if self.unclaimed:
                parts.append(f"{self.unclaimed} finding(s) outside any check at or above {at}")
        elif self.at_or_above:
            n = self.at_or_above
            parts.append(f"{n} finding{'s' if n != 1 else ''} at or above {at}")
        else:
            parts.append(f"no finding at or above {at}")
        below = self.findings - self.at_or_above
        if self.passed and below:
            parts.append(f"{found} (below the threshold)")
        elif not self.passed:
            parts.append(found)
        return "; ".join(parts)

    def line(self) -> str:
        """``"verdict: FAILED — 2 of 4 checks failed at --fail-on high; ..."``."""
        return f"verdict: {self.word} — {self.reason()}"


def report_verdict(report: Report, fail_on: str | Severity | None = "report") -> Verdict:
    """The verdict of ``report`` at ``fail_on`` (default: the one the report records)."""
    threshold = report_threshold(report) if fail_on == "report" else fail_threshold(fail_on)
    claimed, orphans = _by_check(report)
    statuses = [check_status(c.status, claimed[c.name], threshold) for c in report.checks]
    failed = statuses.count("failed")
    errored = statuses.count("error")
    unclaimed = sum(f.severity >= threshold for f in orphans) if threshold is not None else 0
    at_or_above = len(report.at_or_above(threshold)) if threshold is not None else 0
    # Checks were asked for and none ran (all skipped or not applicable): nothing was proved.
    none_ran = bool(statuses) and statuses.count("skipped") == len(statuses)
    passed = threshold is None or not (failed or errored or unclaimed or none_ran)
    return Verdict(
        passed=passed,
        fail_on=threshold,
        checks=len(statuses),
        failed=failed,
        errored=errored,
        skipped=statuses.count("skipped"),
        findings=len(report.findings),
        at_or_above=at_or_above,
        worst=report.worst_severity,
        unclaimed=unclaimed,
    )


def with_fail_on(report: Report, fail_on: str | Severity | None) -> Report:
    """``report`` recording ``fail_on`` (a copy when it changes), for rendering at it."""
    name = fail_on_name(fail_threshold(fail_on))
    if report.fail_on == name:
        return report
    return report.model_copy(update={"fail_on": name})


__all__ = [
    "DEFAULT_FAIL_ON",
    "FAIL_ON_CHOICES",
    "Verdict",
    "check_status",
    "fail_threshold",
    "report_threshold",
    "report_verdict",
    "resolved_checks",
    "with_fail_on",
]
