"""Renderers for a `Report`: JSON, SARIF 2.1.0, JUnit XML, Markdown, HTML and the terminal.

Renderers only format; every number they show was computed by a check. Heavy
libraries (matplotlib for the HTML figures) load only when that format is asked for.

>>> from mlwarden.report import render, write_report
>>> write_report(report, "out/report.sarif")      # format from the suffix
>>> html = render(report, "html")                 # one self-contained page
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlwarden.report.render import FORMATS, format_for_path, normalize_format, render, write_report

if TYPE_CHECKING:
    from rich.console import Console

    from mlwarden.core.findings import Report


def print_report(report: Report, console: Console) -> None:
    """Print a compact, coloured summary of ``report`` on ``console`` (``--format text``)."""
    from mlwarden.report.terminal import print_report as _print_report

    _print_report(report, console)


__all__ = [
    "FORMATS",
    "format_for_path",
    "normalize_format",
    "print_report",
    "render",
    "write_report",
]
