"""Markdown for pull-request comments, job summaries (``$GITHUB_STEP_SUMMARY``) and wikis.

GitHub renders raw HTML inside Markdown, so every user-controlled string is escaped:
``<``, ``>`` and ``&`` become entities, table cells lose their pipes and newlines, and
code blocks use a fence longer than any backtick run inside them.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from mlwarden.core.findings import Figure, Finding, Report, Table
from mlwarden.core.verdict import resolved_checks
from mlwarden.report.formatting import (
    evidence_json,
    format_metric,
    format_value,
    group_by_severity,
    humanize,
    sorted_checks,
    sorted_findings,
    status_counts,
    subject_items,
    threat_ids,
    verdict,
)

STATUS_MARK = {
    "passed": "✅ passed",
    "failed": "❌ failed",
    "error": "⚠️ error",
    "skipped": "⏭️ skipped",
}
SEVERITY_MARK = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_LINE_START = re.compile(r"^(\s*)([#+\-=>]+|\d{1,9}[.)])(?=\s|$)", re.MULTILINE)
_LINK_UNSAFE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def text(value: str) -> str:
    """Escape ``value`` for Markdown prose: no HTML, no accidental emphasis or links."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = _MD_SPECIAL.sub(r"\\\1", value)
    return _LINE_START.sub(_escape_line_start, value)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker = match.group(1), match.group(2)
    if marker[0].isdigit():  # "1." starts an ordered list; CommonMark escapes the dot
        return f"{indent}{marker[:-1]}\\{marker[-1]}"
    return f"{indent}\\{marker}"


def cell(value: str) -> str:
    """Escape ``value`` for a table cell (one line, no pipes)."""
    return text(" ".join(value.split()))


def code_block(body: str, lang: str = "") -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def table(columns: list[str], rows: list[list[str]]) -> str:
    if not columns:
        return ""
    lines = [
        "| " + " | ".join(cell(c) or " " for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        padded = list(row[: len(columns)]) + [""] * (len(columns) - len(row))
        lines.append("| " + " | ".join(cell(str(v)) for v in padded) + " |")
    return "\n".join(lines)


def _finding(finding: Finding, evidence: bool = True) -> list[str]:
    mark = SEVERITY_MARK[finding.severity.value]
    out = [f"#### {mark} `{finding.id.replace('`', '')}` {text(finding.title)}", ""]
    facts = [f"**Severity:** {finding.severity.value}"]
    if finding.check:
        facts.append(f"**Check:** {text(finding.check)}")
    if finding.location:
        facts.append(f"**Location:** {text(finding.location)}")
    threats = threat_ids(finding)
    if threats:
        facts.append("**Threats:** " + ", ".join(text(t) for t in threats))
    out += ["- " + f for f in facts] + [""]
    if finding.detail:
        out += [text(finding.detail), ""]
    if evidence and finding.evidence:
        out += [
            "<details><summary>Evidence</summary>",
            "",
            code_block(evidence_json(finding.evidence), "json"),
            "",
            "</details>",
            "",
        ]
    return out


def _table(tab: Table) -> list[str]:
    rows = [[format_value(v) for v in row] for row in tab.rows]
    return [f"### {text(tab.title)}", "", table([str(c) for c in tab.columns], rows), ""]


def _figure(fig: Figure) -> list[str]:
    """Markdown has no plots: a caption, and the numbers of small line/bar figures."""
    out = [f"### Figure: {text(fig.title)}", ""]
    if fig.caption:
        out += [f"*{text(fig.caption)}*", ""]
    if fig.kind == "images":
        labels = ", ".join(text(i.label) for i in fig.images[:24])
        more = f" and {len(fig.images) - 24} more" if len(fig.images) > 24 else ""
        out += [f"{len(fig.images)} image(s): {labels}{more}. See the HTML report.", ""]
        return out
    xs = [tuple(s.x) for s in fig.series]
    if (
        fig.series
        and len(set(xs)) == 1
        and 0 < len(xs[0]) <= 20
        and all(len(s.y) == len(s.x) for s in fig.series)
    ):
        columns = [fig.x_label or "x"] + [s.label for s in fig.series]
        rows = [
            [format_value(x)] + [format_value(s.y[i]) for s in fig.series]
            for i, x in enumerate(fig.series[0].x)
        ]
        out += [table(columns, rows), ""]
    else:
        for s in fig.series:
            out.append(f"- {text(s.label)}: {len(s.y)} points")
        out += ["", "See the HTML report for the plot.", ""]
    return out


def _link(path: str) -> str:
    """A relative link to an artefact; anything with a scheme (``javascript:``) stays text."""
    unix = path.replace("\\", "/")
    if _LINK_UNSAFE.match(unix) and not re.match(r"^[A-Za-z]:/", unix):
        return text(path)
    return f"[{text(path)}]({quote(unix, safe='/._-~')})"


#: GitHub's limit on a pull-request or issue comment body.
GITHUB_COMMENT_LIMIT = 65_536


def to_markdown(report: Report, max_chars: int | None = None) -> str:
    """The report as GitHub-flavoured Markdown.

    With ``max_chars`` (e.g. `GITHUB_COMMENT_LIMIT` for a PR comment) the text is made to
    fit: evidence blocks go first, then findings from the mildest severity up, each
    replaced by a count and a pointer to the full report; headings, metrics and checks stay.
    """
    n = len(report.findings)
    full = _markdown(report, evidence=True, keep=n)
    if max_chars is None or len(full) <= max_chars:
        return full
    # binary search for the most findings that fit (the text grows with ``keep``);
    # evidence, table rows and figure data go before any finding does
    lo, hi = 0, n
    best = _markdown(report, evidence=False, keep=0, extras=False)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = _markdown(report, evidence=False, keep=mid, extras=False)
        if len(candidate) <= max_chars:
            lo, best = mid, candidate
        else:
            hi = mid - 1
    text_ = best
    if len(text_) > max_chars:
        note = "\n\n… (cut to fit; see the full report)\n"
        text_ = text_[: max(0, max_chars - len(note))] + note
    return text_


def _markdown(report: Report, evidence: bool, keep: int, extras: bool = True) -> str:
    """The Markdown text with the worst ``keep`` findings written out; without ``extras``
    tables and figures are listed by title only."""
    out: list[str] = [f"# {text(report.title)}", ""]
    out += [f"**Verdict:** {text(verdict(report))}", ""]
    items = [("Created", report.created_at), ("mlwarden", report.tool_version)]
    out += [table(["subject", "value"], [[k, v] for k, v in subject_items(report) + items]), ""]

    if report.metrics:
        out += ["## Metrics", ""]
        out += [
            table(
                ["metric", "value"],
                [[humanize(k), format_metric(k, v)] for k, v in report.metrics.items()],
            ),
            "",
        ]

    if report.checks:
        counts = status_counts(report)
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out += ["## Checks", "", summary, ""]
        rows = [
            [c.name, STATUS_MARK.get(c.status, c.status), f"{c.duration_s:.1f} s", c.summary]
            for c in sorted_checks(resolved_checks(report))
        ]
        out += [table(["check", "status", "time", "summary"], rows), ""]

    out += ["## Findings", ""]
    if not report.findings:
        out += ["No findings.", ""]
    shown = {id(f) for f in sorted_findings(report.findings)[:keep]}
    for severity, findings in group_by_severity(report.findings):
        out += [f"### {severity.value.capitalize()} ({len(findings)})", ""]
        for finding in findings:
            if id(finding) in shown:
                out += _finding(finding, evidence)
        left = sum(id(f) not in shown for f in findings)
        if left:
            out += [f"*{left} more {severity.value} finding(s) in the full report.*", ""]

    if report.tables or report.figures:
        if not extras:
            titles = [f"- {text(t.title)}" for t in report.tables]
            titles += [f"- Figure: {text(f.title)}" for f in report.figures]
            out += ["## Tables and figures", "", *titles, "", "See the full report.", ""]
    if extras and report.tables:
        out += ["## Tables", ""]
        for tab in report.tables:
            out += _table(tab)
    if extras and report.figures:
        out += ["## Figures", ""]
        for fig in report.figures:
            out += _figure(fig)
    if report.artefacts:
        out += ["## Artefacts", ""]
        for art in report.artefacts:
            desc = f" — {text(art.description)}" if art.description else ""
            out.append(f"- **{text(art.name)}**: {_link(art.path)} ({text(art.media_type)}){desc}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
