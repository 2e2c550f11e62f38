"""Console output shared by the commands: Rich consoles and the progress adapter."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from mlwarden.core.findings import Report
from mlwarden.core.progress import ProgressCallback

console = Console()
err_console = Console(stderr=True)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[ProgressCallback]:
    """Yield a `ProgressCallback` that draws one Rich bar per task name.

    Bars are drawn only on a terminal (or when forced); elsewhere (CI logs, pipes) the
    progress comes as a line on stderr every ~10 s or 10% with completed/total and an
    estimate (`LogProgress`), so a long run is never silent. ``--no-progress``: nothing.
    """
    from mlwarden.core.progress import LogProgress, null_progress

    if not enabled:
        yield null_progress
        return
    if not err_console.is_terminal:
        yield LogProgress(sys.stderr)
        return
    bars = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def update(task: str, completed: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total)
        bars.update(tasks[task], completed=completed, total=total)

    with bars:
        yield update


def print_verdict(report: Report) -> int:
    """Print the report's one verdict line last (after the report paths); return its exit code.

    Printed even when the summary scrolled away, so a CI log ends with what decided the
    exit code.
    """
    from rich.text import Text

    from mlwarden.core.verdict import report_verdict

    verdict = report_verdict(report)
    style = (
        "bold yellow" if verdict.fail_on is None else "bold green" if verdict.passed else "bold red"
    )
    console.print(Text(verdict.line(), style=style), soft_wrap=True)  # one line in a CI log
    return verdict.exit_code


def fail(message: str) -> None:
    """Print one error line to stderr (no traceback)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.stderr.flush()
