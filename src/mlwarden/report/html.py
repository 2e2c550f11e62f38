"""One self-contained HTML page: inline CSS, figures as embedded PNGs, no external requests.

The page is meant to be attached to a CI run or mailed, and opened offline. The
template is Jinja2 with autoescaping, and a Content-Security-Policy forbids scripts
and remote loads, so a hostile string in a report (a title copied from a malicious
pickle) can neither run nor phone home even if it slipped past escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mlwarden.core.findings import Figure, Finding, Report
from mlwarden.core.verdict import report_verdict, resolved_checks
from mlwarden.report.formatting import (
    SEVERITY_ORDER,
    evidence_json,
    format_metric,
    format_value,
    group_by_severity,
    humanize,
    severity_counts,
    sorted_checks,
    status_counts,
    subject_items,
    verdict,
)

TEMPLATES = Path(__file__).parent / "templates"

#: Up to this many metrics are all shown as cards; beyond it, the first `CARDS_WHEN_MANY`
#: are cards and the rest a table.
MAX_CARDS = 12
CARDS_WHEN_MANY = 10
#: Findings of these severities start expanded.
OPEN_SEVERITIES = {"critical", "high"}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$")


@dataclass(frozen=True)
class RenderedFigure:
    anchor: str
    title: str
    kind: str
    caption: str
    data_uri: str | None
    error: str | None
    note: str


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["metric"] = lambda value, name: format_metric(name, value)
    env.filters["value"] = format_value
    env.filters["humanize"] = humanize
    return env


def safe_href(path: str) -> str | None:
    """A link target for an artefact, or ``None`` when it must not be a link.

    Only relative or absolute file paths are linked; anything with a scheme
    (``javascript:``, ``data:``, ``https:``) is shown as text, so an artefact path can
    neither run script nor make the page load something remote.
    """
    unix = path.strip().replace("\\", "/")
    if not unix or (_SCHEME.match(unix) and not re.match(r"^[A-Za-z]:/", unix)):
        return None
    if unix.startswith("//"):
        return None  # protocol-relative URL: a remote host
    from urllib.parse import quote

    if re.match(r"^[A-Za-z]:/", unix) or unix.startswith("/"):
        return "file://" + quote(unix if unix.startswith("/") else "/" + unix, safe="/:._-~")
    return quote(unix, safe="/._-~")


def _render_figure(index: int, figure: Figure) -> RenderedFigure:
    from mlwarden.report.plots import MAX_IMAGES, figure_data_uri

    note = ""
    if figure.kind == "images" and len(figure.images) > MAX_IMAGES:
        note = f"Showing the first {MAX_IMAGES} of {len(figure.images)} images."
    try:
        uri, error = figure_data_uri(figure), None
    except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the report
        uri, error = None, f"This figure could not be drawn: {exc}"
    return RenderedFigure(
        f"figure-{index}", figure.title, figure.kind, figure.caption, uri, error, note
    )


def _cell(value: Any) -> dict[str, Any]:
    text = format_value(value)
    return {"text": text, "numeric": isinstance(value, (int, float)) or bool(_NUMBER.match(text))}


def _finding(finding: Finding, index: int) -> dict[str, Any]:
    return {
        "anchor": f"finding-{index}",
        "f": finding,
        "severity": finding.severity.value,
        "evidence": evidence_json(finding.evidence) if finding.evidence else "",
        "open": finding.severity.value in OPEN_SEVERITIES,
    }


def headline(report: Report) -> str:
    """The banner: the verdict first, then the counts it rests on.

    ``"FAILED — 2 of 4 checks failed at --fail-on high; 6 findings, worst high · 1 errored"``;
    the words come from `mlwarden.core.verdict`, as the terminal's, JUnit's and SARIF's do.
    """
    parts = [verdict(report)]
    counts = status_counts(report)
    if report.checks:
        parts.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return " · ".join(parts)


def html_context(report: Report) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays out)."""
    worst = report.worst_severity
    # Headline metrics first (the checks say which matter), then the rest in their order.
    first = [k for k in report.headline if k in report.metrics]
    metrics = [(k, report.metrics[k]) for k in first]
    metrics += [(k, v) for k, v in report.metrics.items() if k not in first]
    n_cards = len(metrics) if len(metrics) <= MAX_CARDS else CARDS_WHEN_MANY
    counter = iter(range(len(report.findings)))
    groups = [
        {"severity": sev.value, "findings": [_finding(f, next(counter)) for f in fs]}
        for sev, fs in group_by_severity(report.findings)
    ]
    tables = []
    for i, t in enumerate(report.tables):
        rows = [[_cell(v) for v in row] for row in t.rows]
        numeric = [
            bool(rows) and all(len(r) > j and r[j]["numeric"] for r in rows)
            for j in range(len(t.columns))
        ]
        tables.append(
            {
                "anchor": f"table-{i}",
                "title": t.title,
                "columns": [str(c) for c in t.columns],
                "rows": rows,
                "numeric": numeric,
            }
        )
    figures = [_render_figure(i, f) for i, f in enumerate(report.figures)]
    artefacts = [{"a": a, "href": safe_href(a.path)} for a in report.artefacts]
    return {
        "report": report,
        "subject": subject_items(report),
        "verdict": verdict(report),
        "worst": worst.value if worst else "none",
        "severity_counts": [(s.value, n) for s, n in severity_counts(report).items()],
        "status_counts": status_counts(report),
        "cards": [(humanize(k), format_metric(k, v)) for k, v in metrics[:n_cards]],
        "more_metrics": [(humanize(k), format_metric(k, v)) for k, v in metrics[n_cards:]],
        "headline": headline(report),
        "verdict_word": report_verdict(report).word,
        "passed": report_verdict(report).passed,
        "checks": sorted_checks(resolved_checks(report)),
        "groups": groups,
        "tables": tables,
        "figures": figures,
        "artefacts": artefacts,
        "severities": [s.value for s in SEVERITY_ORDER],
    }


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    return _environment().get_template("report.html.j2").render(**html_context(report))
