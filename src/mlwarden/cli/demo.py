"""``mlwarden demo``: train, export and audit a small teacher/student pair on digits."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import ProgressOption


def demo_command(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder to write (default mlwarden-demo[-text])."
    ),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even if cached."),
    text: bool = typer.Option(
        False,
        "--text",
        help="The text pipeline instead: a sentiment student fine-tuned from the packaged "
        "all-MiniLM-L6-v2 on real review sentences (default output mlwarden-demo-text).",
    ),
    progress: bool = ProgressOption,
) -> None:
    """Train a teacher and a student on digits (cached), audit the student, write the report.

    With --text: scan the packaged all-MiniLM-L6-v2, fine-tune a sentiment student from it
    on Rotten Tomatoes sentences (cached), audit the student. Ends with the audit's verdict
    line; the exit code follows it (1: FAILED).
    """
    from mlwarden.cli.ui import console, print_verdict, progress_bars

    if text:
        from mlwarden.demo_text import run_text_demo as run

        console.print(
            "[bold]mlwarden demo --text[/]: all-MiniLM-L6-v2 -> sentiment student on "
            "Rotten Tomatoes sentences"
        )
    else:
        from mlwarden.demo import run_demo as run

        console.print("[bold]mlwarden demo[/]: teacher -> student on scikit-learn digits")
    folder = output or Path("mlwarden-demo-text" if text else "mlwarden-demo")
    with progress_bars(progress) as bar:
        result = run(folder, retrain=retrain, progress=bar)
    note = "trained and cached" if result.trained else "loaded from cache"
    console.print(f"models {note}; student clean accuracy {result.clean_accuracy:.3f}")
    for fmt, path in result.reports.items():
        console.print(f"[bold]{fmt:>5}[/] report: {path}", highlight=False)
    console.print(
        f"re-run the audit with: mlwarden audit --config {result.config}", highlight=False
    )
    raise typer.Exit(print_verdict(result.report))
