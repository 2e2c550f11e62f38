"""``mlwarden transfer``: train a student from a teacher with a chosen strategy, then audit it."""

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
    strategy: str = typer.Option(
        "full_reinit",
        "--strategy",
        "-s",
        help="linear_probe, last_k, full, full_reinit, fineprune, dp (DP-SGD), or 'compare'.",
    ),
    epsilon: float = typer.Option(
        2.0, "--epsilon", help="Privacy budget of strategy dp (DP-SGD, extra 'privacy')."
    ),
    k: int = typer.Option(1, "--k", min=1, help="Blocks trained by strategy last_k."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Training epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    test_fraction: float = typer.Option(
        0.25, "--test-fraction", help="Held-out share of --data for the audit."
    ),
    student_out: Path | None = typer.Option(
        None, "--student-out", help="Write the student here (.pt2)."
    ),
    scan_steps: int | None = typer.Option(
        None,
        "--scan-steps",
        min=1,
        help="Steps of the teacher trigger scan (default: detector default).",
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
    """Fine-tune a student from --teacher, then audit backdoor inheritance, adversarial
    transfer and divergence."""
    from mlwarden.cli.common import emit_report, load_subject, parse_fail_on
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import InputError, ParameterError
    from mlwarden.defenses.training.finetune import STRATEGIES, train_student
    from mlwarden.evaluation.transfer import audit_transfer, compare_strategies, transfer_report

    parse_fail_on(fail_on)
    if strategy != "compare" and strategy not in STRATEGIES:
        raise ParameterError(
            f"--strategy must be one of {', '.join(STRATEGIES)} or compare, got '{strategy}'"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"--test-fraction must be in (0, 1), got {test_fraction}")
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
    if not isinstance(loaded, Classifier):
        raise InputError(
            f"'{teacher}' is a black-box model; a student can only be fine-tuned from weights"
        )
    test, train = dataset.split(test_fraction, seed=seed)
    with progress_bars(progress) as bar:
        if strategy == "compare":
            report, _ = compare_strategies(
                loaded,
                train.x,
                train.y,
                test.x,
                test.y,
                epochs=epochs,
                seed=seed,
                progress=bar,
                lr=lr,
                k=k,
            )
            student = None
        else:
            trained = train_student(
                loaded,
                train.x,
                train.y,
                strategy=strategy,
                k=k,
                epochs=epochs,
                lr=lr,
                target_epsilon=epsilon,
                seed=seed,
                progress=bar,
            )
            student = trained.classifier
            audit = audit_transfer(
                loaded, student, test.x, test.y, scan_steps=scan_steps, seed=seed, progress=bar
            )
            report = transfer_report(
                audit, strategy=strategy, subject=str(student_out or "student")
            )
            report.title = "mlwarden transfer audit"
            if "epsilon" in trained.details:  # DP-SGD: the privacy spent by the student
                report.metrics["transfer.dp_epsilon"] = trained.details["epsilon"]
                report.metrics["transfer.dp_delta"] = trained.details["delta"]
                report.headline.append("transfer.dp_epsilon")
    note_assumptions(report, loaded)
    report.subject.update(
        {
            "teacher": teacher,
            "data": data,
            "strategy": strategy,
            "epochs": epochs,
            "train_samples": len(train),
            "test_samples": len(test),
            "seed": seed,
        }
    )
    if student is not None and student_out is not None:
        from mlwarden.io.export import save_pt2

        try:
            saved = save_pt2(student, student_out)
        except InputError:
            # a student rebuilt from an unflattened .pt2 teacher exports only with a static
            # batch size (the loader pads batches for such files)
            saved = save_pt2(student, student_out, dynamic_batch=False)
        report.subject["student"] = str(saved)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
