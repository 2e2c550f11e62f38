"""The terminal summary: compact, ordered, and immune to markup in findings."""

from __future__ import annotations

import io

from rich.console import Console

from mlwarden.core.findings import Finding, Report
from mlwarden.report import print_report, render
from mlwarden.report.terminal import MAX_FINDINGS


def _printed(report: Report, colour: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=120, force_terminal=colour, color_system="standard" if colour else None
    )
    print_report(report, console)
    return buffer.getvalue()


def test_summary_lists_subject_metrics_checks_and_findings_worst_first(sample_report) -> None:
    out = _printed(sample_report)
    assert "Audit of digits-cnn (teacher)" in out and "models/teacher.pt2" in out
    assert "Verdict: FAILED — 3 of 6 checks failed at --fail-on high" in " ".join(out.split())
    assert "Clean accuracy" in out and "97.3%" in out
    assert "✗ failed" in out and "! error" in out and "- skipped" in out and "✓ passed" in out
    order = [out.index(s) for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")]
    assert order == sorted(order)
    assert out.index("MLW-SUP-001") < out.index("MLW-ACC-000")


def test_colours_follow_severity(sample_report) -> None:
    out = _printed(sample_report, colour=True)
    assert "\x1b[" in out
    assert "\x1b[1;31mHIGH" in out  # bold red


def test_markup_and_control_sequences_in_findings_print_literally() -> None:
    report = Report(
        findings=[Finding(id="X", title="[bold red]boom[/] \x1b[2J\x07", severity="low")]
    )
    out = _printed(report, colour=False)
    assert "[bold red]boom[/]" in out
    assert "\x1b" not in out and "\x07" not in out


def test_long_reports_are_cut_with_a_pointer_to_the_full_report() -> None:
    report = Report(
        findings=[
            Finding(id=f"F-{i}", title=f"finding {i}", severity="info")
            for i in range(MAX_FINDINGS + 7)
        ]
    )
    out = _printed(report)
    assert "… and 7 more" in out
    assert f"F-{MAX_FINDINGS - 1} " in out and f"F-{MAX_FINDINGS} " not in out


def test_text_format_is_the_plain_summary(sample_report) -> None:
    text = render(sample_report, "text")
    assert "\x1b[" not in text and "MLW-SUP-001" in text
    assert "No findings." in render(Report(), "text")
