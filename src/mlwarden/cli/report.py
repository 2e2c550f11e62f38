"""``mlwarden report``: re-render a saved JSON report in another format.

CI saves ``report.json`` once; this turns it into SARIF for code scanning, JUnit for
the test tab, Markdown for the job summary or HTML for people, without re-running
anything. No torch import: rendering needs none.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import OutputFormat, fail_threshold
from mlwarden.core.verdict import FAIL_ON_CHOICES

report_app = typer.Typer(
    help="Work with saved reports: re-render a JSON report as SARIF, JUnit, Markdown or HTML.",
    no_args_is_help=True,
)


@report_app.callback()
def _report() -> None:
    """Work with saved reports."""


_REPORT_ARG = typer.Argument(..., metavar="REPORT.json", help="A report saved with --format json.")
_FORMAT_OPT = typer.Option(
    None,
    "--format",
    "-f",
    help="text, json, sarif, junit, html or md. Default: from the --output suffix, else text.",
)
_OUTPUT_OPT = typer.Option(
    None, "--output", "-o", help="Write here (.html .md .sarif .xml .json) instead of stdout."
)
_FAIL_ON_OPT = typer.Option(
    None,
    "--fail-on",
    help=f"Judge the report at this severity ({', '.join(FAIL_ON_CHOICES)}); the rendered "
    "verdict and the exit code follow it. Default: the fail_on the report was made with.",
)
_MAX_CHARS_OPT = typer.Option(
    None,
    "--max-chars",
    min=1000,
    help="Markdown only: fit the text in this many characters (65536 for a GitHub comment).",
)


@report_app.command("render")
def render_command(
    report_path: Path = _REPORT_ARG,
    fmt: OutputFormat | None = _FORMAT_OPT,
    output: Path | None = _OUTPUT_OPT,
    fail_on: str | None = _FAIL_ON_OPT,
    max_chars: int | None = _MAX_CHARS_OPT,
) -> None:
    """Render REPORT.json as another format.

    Example: [bold]mlwarden report render report.json -o report.html[/]
    """
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.verdict import report_verdict, with_fail_on
    from mlwarden.report import format_for_path, print_report, render
    from mlwarden.report.reader import read_report
    from mlwarden.report.render import write_atomic

    if fail_on is not None:
        fail_threshold(fail_on)  # a typo fails before any work is done
    report = read_report(report_path)
    if fail_on is not None:
        report = with_fail_on(report, fail_on)
    name = fmt.value if fmt is not None else None
    if name is None and output is not None:
        name = format_for_path(output)
        if name is None:
            raise ConfigError(
                f"cannot tell the format from '{output.name}'; pass --format "
                "(text, json, sarif, junit, html, md) or use a known suffix"
            )
    name = name or "text"
    if max_chars is not None and name != "md":
        raise ConfigError(f"--max-chars applies to Markdown only (--format md), not '{name}'")
    code = report_verdict(report).exit_code

    if output is None and name == "text":
        from mlwarden.cli.ui import console

        print_report(report, console)
        raise typer.Exit(code)
    if max_chars is not None:
        from mlwarden.report.markdown import to_markdown

        text = to_markdown(report, max_chars=max_chars)
    else:
        text = render(report, name)
    if output is None:
        typer.echo(text, nl=False)
    else:
        written = write_atomic(output, text)
        from mlwarden.cli.ui import err_console

        err_console.print(
            f"wrote {written} ({name}, {written.stat().st_size / 1024:.1f} KiB)",
            highlight=False,
            markup=False,
            soft_wrap=True,  # a path a user copies is never broken across lines
        )
    raise typer.Exit(code)
