"""``mlwarden demo``: train, export and audit a small teacher/student pair on digits."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import ProgressOption


def demo_command(
    output: Path = typer.Option(Path("mlwarden-demo"), "--output", "-o", help="Folder to write."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if cached."),
    progress: bool = ProgressOption,
) -> None:
    """Train a teacher and a student on digits (cached), audit the student, write the report.

    Ends with the audit's verdict line; the exit code follows it (1: FAILED).
    """
    from mlwarden.cli.ui import console, print_verdict, progress_bars
    from mlwarden.demo import run_demo

    console.print("[bold]mlwarden demo[/]: teacher -> student on scikit-learn digits")
    with progress_bars(progress) as bar:
        result = run_demo(output, retrain=retrain, progress=bar)
    note = "trained and cached" if result.trained else "loaded from cache"
    console.print(f"models {note}; student clean accuracy {result.clean_accuracy:.3f}")
    for fmt, path in result.reports.items():
        console.print(f"[bold]{fmt:>5}[/] report: {path}", highlight=False)
    console.print(
        f"re-run the audit with: mlwarden audit --config {result.config}", highlight=False
    )
    raise typer.Exit(print_verdict(result.report))
