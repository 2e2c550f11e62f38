"""Formatting helpers every renderer shares: severity order, values, evidence, threat ids.

Renderers never compute results; they only decide how a value reads. Keeping these
decisions in one module makes the terminal, Markdown, HTML, SARIF and JUnit outputs
agree on ordering ("critical first"), number formatting and truncation of hostile or
oversized input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from mlwarden.core.findings import CheckResult, Finding, Report, Severity
from mlwarden.core.verdict import report_verdict, resolved_checks

#: Severities from worst to mildest: the order every renderer lists findings in.
SEVERITY_ORDER: tuple[Severity, ...] = tuple(sorted(Severity, key=lambda s: -s.rank))

#: Order in which check statuses are listed (problems first).
STATUS_ORDER: dict[str, int] = {"error": 0, "failed": 1, "skipped": 2, "passed": 3}

#: Longest evidence dump shown inline; the JSON report always keeps everything.
EVIDENCE_LIMIT = 4000

#: Longest single value shown in a metric, subject or table cell.
CELL_LIMIT = 300

_PERCENT_NAME = re.compile(r"(accuracy|(^|_)rate$|success)", re.IGNORECASE)


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings worst first; equal severities keep their original order (stable)."""
    return sorted(findings, key=lambda f: -f.severity.rank)


def group_by_severity(findings: Iterable[Finding]) -> list[tuple[Severity, list[Finding]]]:
    """``[(severity, findings), ...]`` worst first, only severities that occur."""
    groups: dict[Severity, list[Finding]] = {s: [] for s in SEVERITY_ORDER}
    for finding in findings:
        groups[finding.severity].append(finding)
    return [(s, fs) for s, fs in groups.items() if fs]


def severity_counts(report: Report) -> dict[Severity, int]:
    """Number of findings per severity, worst first, zeros included."""
    counts = {s: 0 for s in SEVERITY_ORDER}
    for finding in report.findings:
        counts[finding.severity] += 1
    return counts


def sorted_checks(checks: Sequence[CheckResult]) -> list[CheckResult]:
    """Checks with problems first (error, failed, skipped, passed), stable otherwise."""
    return sorted(checks, key=lambda c: STATUS_ORDER.get(c.status, 9))


def status_counts(report: Report) -> dict[str, int]:
    """Checks per status, the status derived from findings and ``fail_on`` (`resolved_checks`)."""
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for check in resolved_checks(report):
        counts[check.status] = counts.get(check.status, 0) + 1
    return counts


def verdict(report: Report) -> str:
    """The report's verdict in words, e.g. ``"FAILED — 2 of 4 checks failed at --fail-on high;
    6 findings, worst high"`` (`mlwarden.core.verdict`, the one place that decides)."""
    decided = report_verdict(report)
    return f"{decided.word} — {decided.reason()}"


def truncate(text: str, limit: int = CELL_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} chars)"


def format_number(value: float) -> str:
    """Up to 4 significant digits; integers stay integers; NaN/inf spelt out."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_value(value: Any, limit: int = CELL_LIMIT) -> str:
    """A readable, bounded string for any JSON-able value."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, str):
        return truncate(value, limit)
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        return truncate(
            ", ".join(v if isinstance(v, str) else format_number(v) for v in value), limit
        )
    return truncate(compact_json(value), limit)


def format_metric(name: str, value: Any) -> str:
    """Like `format_value`, but accuracies and rates in [0, 1] read as percentages."""
    if (
        isinstance(value, float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
        and _PERCENT_NAME.search(name)
    ):
        return f"{value * 100:.1f}%"
    return format_value(value)


def humanize(name: str) -> str:
    """``robust_accuracy_pgd`` -> ``Robust accuracy pgd`` for labels."""
    text = name.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else name


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become numbers and
    lists, non-finite floats become the strings ``"NaN"``/``"Infinity"`` (JSON has no
    such numbers) and anything unknown becomes its ``str``.

    Evidence is typed ``Any``; a check that stores a ``numpy.float32`` must not make
    the report unrenderable.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        try:
            return jsonable(tolist())
        except Exception:  # noqa: BLE001 - fall back to str for exotic objects
            pass
    return str(value)


def compact_json(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(", ", ": "))


def evidence_json(evidence: dict[str, Any], limit: int = EVIDENCE_LIMIT) -> str:
    """Pretty-printed evidence, cut at ``limit`` characters (the JSON report has it all)."""
    text = json.dumps(jsonable(evidence), ensure_ascii=False, indent=2, sort_keys=True)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters in the JSON report)"
    return text


def threat_ids(finding: Finding) -> list[str]:
    """ATLAS and OWASP ids of a finding, prefixed so that their source is clear."""
    return [f"ATLAS:{a}" for a in finding.atlas] + [f"OWASP:{o}" for o in finding.owasp]


def subject_items(report: Report) -> list[tuple[str, str]]:
    """The subject as ``(label, value)`` pairs, model and data first; unset keys left out."""
    order = {"model": 0, "data": 1, "dataset": 1}
    keys = sorted(
        (k for k, v in report.subject.items() if v is not None and v != ""),
        key=lambda k: (order.get(k, 2), k),
    )
    return [(humanize(k), format_value(report.subject[k])) for k in keys]


_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Remove characters XML 1.0 cannot carry (NUL, most control characters, lone surrogates).

    A finding title copied from a hostile pickle may contain anything; an XML report
    that a CI reader cannot parse would hide every other result.
    """
    return _XML_INVALID.sub("\ufffd", text)
