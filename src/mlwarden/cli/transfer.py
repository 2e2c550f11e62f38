"""``mlwarden transfer``: train a student from a teacher with a chosen strategy, then audit it.

A thin adapter: the flags override `TransferSettings` (where every default lives) and
`run_transfer` does the work, the same runner the ``transfer`` audit check calls. A flag
left out keeps the settings' default. ``--student`` audits a student trained elsewhere
instead of training one (the check's ``teacher`` mode).
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    AllowOption,
    ConfigOption,
    DeviceOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SeedOption,
    SpecOption,
)


def transfer_command(
    teacher: str = typer.Option(
        ..., "--teacher", "-t", help="Teacher model (.pt2 or weights with --factory)."
    ),
    data: str = typer.Option(
        ..., "--data", "-d", help="Student training data (.npz, .npy, .csv, folder, digits)."
    ),
    student: str | None = typer.Option(
        None,
        "--student",
        help="Audit this student of the teacher (same architecture, --factory) instead of "
        "training one; --data is then all audit data.",
    ),
    strategy: str | None = typer.Option(
        None,
        "--strategy",
        "-s",
        help="linear_probe, last_k, full, full_reinit, fineprune, dp (DP-SGD), or 'compare'.",
    ),
    epsilon: float | None = typer.Option(
        None, "--epsilon", help="Privacy budget of strategy dp (DP-SGD, extra 'privacy')."
    ),
    k: int | None = typer.Option(None, "--k", help="Blocks trained by strategy last_k."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Held-out share of --data for the audit."
    ),
    eps: float | None = typer.Option(
        None, "--eps", help="L-inf radius of the PGD examples crafted on the teacher."
    ),
    samples: int | None = typer.Option(None, "--samples", help="Audit at most N samples."),
    scan_steps: int | None = typer.Option(
        None, "--scan-steps", help="Steps of the teacher trigger scan (default: the detector's)."
    ),
    trigger: Path | None = typer.Option(
        None,
        "--trigger",
        help="A known trigger to measure (.npz with arrays 'mask' and 'pattern'), instead of "
        "the one the teacher scan (as `backdoor detect`) finds; with --target.",
    ),
    target: int | None = typer.Option(None, "--target", help="Target class of --trigger."),
    student_out: Path | None = typer.Option(
        None, "--student-out", help="Write the trained student here (.pt2)."
    ),
    seed: int = SeedOption,
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Fine-tune a student from --teacher (or take --student), then audit it.

    The audit: backdoor inheritance (the ASR of the teacher's trigger above a clean
    baseline), adversarial transfer and divergence from the teacher.
    """
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.errors import InputError, ParameterError
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.transfer import TransferSettings, require_teacher, run_transfer

    fail_threshold(fail_on)
    if (trigger is None) != (target is None):
        raise ParameterError("--trigger and --target go together: give both or neither")
    settings = settings_from_flags(
        TransferSettings,
        {
            "strategy": strategy,
            "epochs": epochs,
            "lr": lr,
            "k": k,
            "epsilon": epsilon,
            "test_fraction": test_fraction,
            "eps": eps,
            "samples": samples,
            "scan_steps": scan_steps,
            "trigger": None if trigger is None else str(trigger),
            "target": target,
        },
    )
    if student_out is not None and (student is not None or settings.strategy == "compare"):
        raise ParameterError(
            "--student-out writes a student trained here: not with --student or --strategy compare"
        )
    loaded, dataset = load_subject(
        teacher,
        data,
        factory=factory,
        spec=spec,
        config=config,
        device=device,
        allow=allow,
        samples=None,
    )
    assert dataset is not None
    given = None
    if student is not None:
        from mlwarden.io.models import load_model

        require_teacher(loaded, trains=False)  # refused before the student is loaded
        given = load_model(
            student, factory=factory, spec=loaded.spec, device=device, allow=tuple(allow)
        )
    comparing = settings.strategy == "compare" and student is None
    report = Report(
        title="mlwarden transfer: strategy comparison" if comparing else "mlwarden transfer audit"
    )
    with progress_bars(progress) as bar:
        run = run_transfer(
            loaded,
            dataset,
            settings,
            report=report,
            student=given,
            seed=seed,
            subject=str(student or student_out or "student"),
            progress=bar,
        )
    report.subject.update(
        {"teacher": teacher, "data": data, "test_samples": run.test_samples, "seed": seed}
    )
    if student is not None:
        report.subject["student"] = student
    else:
        report.subject.update(
            strategy=settings.strategy, epochs=settings.epochs, train_samples=run.train_samples
        )
    if run.student is not None and student_out is not None:
        from mlwarden.io.export import save_pt2

        try:
            saved = save_pt2(run.student, student_out)
        except InputError:
            # a student rebuilt from an unflattened .pt2 teacher exports only with a static
            # batch size (the loader pads batches for such files)
            saved = save_pt2(run.student, student_out, dynamic_batch=False)
        report.subject["student"] = str(saved)
    if fmt is OutputFormat.text and output is None:  # the tables are the result: print them
        from rich.console import Console

        from mlwarden.cli.ui import console
        from mlwarden.report.terminal import table_renderable

        # a log or pipe is not a narrow terminal: give the eight columns room to stay whole
        out = console if console.is_terminal else Console(width=max(console.width, 120))
        for table in report.tables:
            out.print(table_renderable(table))
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
