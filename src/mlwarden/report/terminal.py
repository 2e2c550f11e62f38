"""The terminal summary (``--format text``): what a person at a shell needs at a glance.

Subject, verdict, key metrics, checks with status and the findings worst first, in
colour. Every user-controlled string goes through `rich.text.Text`, never through
markup, so a finding titled ``[bold red]...`` or holding escape codes prints literally.
"""

from __future__ import annotations

import io
import re

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mlwarden.core.findings import Report
from mlwarden.core.findings import Table as FindingsTable
from mlwarden.core.verdict import report_verdict, resolved_checks
from mlwarden.report.formatting import (
    format_metric,
    format_value,
    humanize,
    sorted_checks,
    sorted_findings,
    status_counts,
    subject_items,
    truncate,
    verdict,
)

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "bold yellow",
    "low": "cyan",
    "info": "dim",
}
STATUS_STYLE = {
    "passed": ("✓ passed", "green"),
    "failed": ("✗ failed", "bold red"),
    "error": ("! error", "bold magenta"),
    "skipped": ("- skipped", "dim"),
}
BORDER_STYLE: dict[str | None, str] = {
    None: "green",
    "critical": "red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "green",
}

#: Findings listed before "... and N more" (the JSON/HTML reports list all).
MAX_FINDINGS = 50
MAX_METRICS = 16

# Terminal control sequences (ESC, BEL, ...) in a hostile title could rewrite the screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _t(value: object, style: str = "", limit: int = 200) -> Text:
    return Text(truncate(_CONTROL.sub("?", str(value)), limit), style=style)


def report_renderable(report: Report) -> Group:
    """The summary as one Rich renderable (printed by `print_report`)."""
    worst = report.worst_severity
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in subject_items(report):
        head.add_row(_t(label), _t(value))
    head.add_row(_t("Created"), _t(f"{report.created_at}  (mlwarden {report.tool_version})"))
    decided = report_verdict(report)
    verdict_style = (
        "bold yellow" if decided.fail_on is None else "bold green" if decided.passed else "bold red"
    )
    verdict_line = Text.assemble(("Verdict: ", "bold"), _t(verdict(report), verdict_style, 400))
    parts: list[object] = [
        Panel(
            Group(head, Text(""), verdict_line),
            title=_t(report.title, "bold"),
            title_align="left",
            border_style="red"
            if not decided.passed
            else BORDER_STYLE[worst.value if worst else None],
        )
    ]

    if report.metrics:
        metrics = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            title="Metrics",
            title_justify="left",
            title_style="bold",
        )
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        items = list(report.metrics.items())
        for key, value in items[:MAX_METRICS]:
            metrics.add_row(_t(humanize(key)), _t(format_metric(key, value)))
        if len(items) > MAX_METRICS:
            metrics.add_row(_t(f"… {len(items) - MAX_METRICS} more", "dim"), Text(""))
        parts.append(metrics)

    if report.checks:
        counts = status_counts(report)
        title = "Checks: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        checks = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            title=title,
            title_justify="left",
            title_style="bold",
        )
        checks.add_column("check")
        checks.add_column("status")
        checks.add_column("time", justify="right")
        checks.add_column("summary", overflow="fold")
        for check in sorted_checks(resolved_checks(report)):
            label, style = STATUS_STYLE.get(check.status, (check.status, ""))
            checks.add_row(
                _t(check.name),
                Text(label, style=style),
                _t(f"{check.duration_s:.1f}s"),
                _t(check.summary),
            )
        parts.append(checks)

    if report.findings:
        findings = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            title=f"Findings ({len(report.findings)})",
            title_justify="left",
            title_style="bold",
        )
        findings.add_column("severity")
        findings.add_column("id", no_wrap=True)
        findings.add_column("title", overflow="fold")
        findings.add_column("where", overflow="fold")
        ordered = sorted_findings(report.findings)
        for finding in ordered[:MAX_FINDINGS]:
            sev = finding.severity.value
            where = finding.location or finding.check
            findings.add_row(
                Text(sev.upper(), style=SEVERITY_STYLE[sev]),
                _t(finding.id),
                _t(finding.title),
                _t(where or "", "dim"),
            )
        if len(ordered) > MAX_FINDINGS:
            findings.add_row(
                Text(""),
                Text(""),
                _t(
                    f"… and {len(ordered) - MAX_FINDINGS} more (see the JSON or HTML report)", "dim"
                ),
                Text(""),
            )
        parts.append(findings)
    else:
        parts.append(Text("No findings.", style="bold green"))
    return Group(*parts)


def print_report(report: Report, console: Console) -> None:
    """Print the summary of ``report`` on ``console``."""
    console.print(report_renderable(report))


def to_text(report: Report, width: int = 100) -> str:
    """The terminal summary as plain text (no colour), e.g. for a log file."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        force_terminal=False,
        legacy_windows=False,
        emoji=False,
        highlight=False,
    )
    print_report(report, console)
    return buffer.getvalue()


def _numeric(cell: object) -> bool:
    """Whether ``cell`` reads as a number (numbers align right, words and sentences left)."""
    return cell is None or cell == "n/a" or (
        isinstance(cell, int | float) and not isinstance(cell, bool)
    )


def table_renderable(table: FindingsTable) -> Table:
    """One report table (`mlwarden.core.findings.Table`) as a Rich table, for commands whose
    table is the result (``transfer --strategy compare``)."""
    out = Table(
        title=_t(table.title, "bold"),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        collapse_padding=True,
        pad_edge=False,
    )
    for pos, column in enumerate(table.columns):  # folded, never cut, on a narrow terminal
        numeric = pos > 0 and all(_numeric(row[pos]) for row in table.rows if pos < len(row))
        out.add_column(_t(column), justify="right" if numeric else "left", overflow="fold")
    for row in table.rows:
        out.add_row(*(_t(format_value(cell)) for cell in row))
    return out
