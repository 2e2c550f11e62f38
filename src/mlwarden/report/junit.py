"""JUnit XML: every CI system (GitHub Actions reporters, GitLab, Jenkins, Azure) shows it.

One ``<testcase>`` per `CheckResult` (classname ``mlwarden.<check>``): a failed check
carries ``<failure>`` with its findings, an errored one ``<error>``, a skipped one
``<skipped/>``. Findings that no check result claims (``mlwarden scan`` emits findings
without checks) get a test case of their own, failed when any of them is at or above
the report's ``fail_on``, so that they are never silently dropped from a CI summary.
Statuses come from `mlwarden.core.verdict`, as the terminal's, HTML's and SARIF's do;
the suite's ``mlwarden.verdict`` property is the verdict line.
"""

from __future__ import annotations

import datetime as _dt
import xml.etree.ElementTree as ET
from typing import Any

from mlwarden.core.findings import Finding, Report
from mlwarden.core.verdict import report_threshold, report_verdict, resolved_checks
from mlwarden.report.formatting import (
    format_value,
    sorted_findings,
    threat_ids,
    truncate,
    xml_safe,
)


def _finding_text(finding: Finding) -> str:
    lines = [f"[{finding.severity.value.upper()}] {finding.id}: {finding.title}"]
    if finding.location:
        lines.append(f"  location: {finding.location}")
    if finding.detail:
        lines.extend("  " + line for line in finding.detail.splitlines())
    threats = threat_ids(finding)
    if threats:
        lines.append("  threats: " + ", ".join(threats))
    return "\n".join(lines)


def _findings_text(findings: list[Finding]) -> str:
    return "\n\n".join(_finding_text(f) for f in sorted_findings(findings))


def _findings_message(findings: list[Finding], summary: str) -> str:
    if summary:
        return truncate(summary, 500)
    if not findings:
        return "check failed"
    worst = max((f.severity for f in findings), key=lambda s: s.rank)
    first = sorted_findings(findings)[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return truncate(f"{worst.value}: {first.title}{more}", 500)


def _timestamp(created_at: str) -> str:
    """ISO 8601 without a zone, as the Ant JUnit schema wants (in UTC)."""
    try:
        moment = _dt.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return _dt.datetime(1970, 1, 1).isoformat(timespec="seconds")
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_safe(str(v)) for k, v in attrs.items()})
    if text:
        el.text = xml_safe(text)
    return el


def _seconds(value: float) -> str:
    return f"{max(float(value), 0.0):.3f}" if value == value else "0.000"  # NaN -> 0


def junit_tree(report: Report) -> ET.Element:
    """The report as a ``<testsuites>`` element (one ``<testsuite>``)."""
    by_check: dict[str, list[Finding]] = {}
    for finding in report.findings:
        by_check.setdefault(finding.check, []).append(finding)

    # (name, status, seconds, message, body, system_out)
    cases: list[tuple[str, str, float, str, str, str]] = []
    threshold = report_threshold(report)
    for check in resolved_checks(report):
        findings = by_check.pop(check.name, [])
        body = _findings_text(findings)
        message = _findings_message(findings, check.summary)
        cases.append((check.name, check.status, check.duration_s, message, body, check.summary))
    for check_name, findings in by_check.items():
        name = check_name or "findings"
        failed = threshold is not None and any(f.severity >= threshold for f in findings)
        cases.append(
            (
                name,
                "failed" if failed else "passed",
                0.0,
                _findings_message(findings, ""),
                _findings_text(findings),
                f"{len(findings)} finding(s) not attributed to a check result",
            )
        )

    counts = {
        "tests": len(cases),
        "failures": sum(c[1] == "failed" for c in cases),
        "errors": sum(c[1] == "error" for c in cases),
        "skipped": sum(c[1] == "skipped" for c in cases),
    }
    total_time = sum(max(c[2], 0.0) for c in cases if c[2] == c[2])

    root = ET.Element("testsuites")
    for key, value in {"name": "mlwarden", **counts, "time": _seconds(total_time)}.items():
        root.set(key, xml_safe(str(value)))
    suite = _el(
        root,
        "testsuite",
        name=f"mlwarden: {report.title}",
        **counts,
        time=_seconds(total_time),
        timestamp=_timestamp(report.created_at),
        hostname="localhost",
        id=0,
        package="mlwarden",
    )
    props = _el(suite, "properties")
    _el(props, "property", name="mlwarden.version", value=report.tool_version)
    _el(props, "property", name="mlwarden.verdict", value=report_verdict(report).line())
    for key, value in report.subject.items():
        _el(props, "property", name=f"subject.{key}", value=format_value(value, 2000))
    for key, value in report.metrics.items():
        _el(props, "property", name=f"metric.{key}", value=format_value(value, 2000))

    for name, status, seconds, message, body, system_out in cases:
        case = _el(
            suite, "testcase", classname=f"mlwarden.{name}", name=name, time=_seconds(seconds)
        )
        if status == "failed":
            _el(case, "failure", body or message, message=message, type="failed")
        elif status == "error":
            _el(case, "error", body or message, message=message, type="error")
        elif status == "skipped":
            _el(case, "skipped", message=message if system_out else "skipped")
        elif status == "passed":
            # failed/errored cases already carry the summary as their message
            out = "\n\n".join(t for t in (system_out, body) if t)
            if out:
                _el(case, "system-out", out)
    return root


def to_junit(report: Report) -> str:
    """The report as JUnit XML text (UTF-8, with an XML declaration)."""
    root = junit_tree(report)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode", xml_declaration=False).join(
        ['<?xml version="1.0" encoding="UTF-8"?>\n', "\n"]
    )
