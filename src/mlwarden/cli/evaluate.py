"""``mlwarden evaluate robustness``: robust accuracy curve with an attack ensemble."""

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

evaluate_app = typer.Typer(
    help="Evaluate a model (robustness curves, sanity checks).",
    no_args_is_help=True,
    add_completion=False,
)


@evaluate_app.command("robustness")
def robustness_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    data: str = typer.Option(..., "--data", "-d", help="Data (.npz, .npy, .csv, folder, digits)."),
    preset: str = typer.Option(
        "standard", "--preset", "-p", help="pgd, fast, standard, thorough or blackbox."
    ),
    eps: list[float] = typer.Option(
        [], "--eps", help="Perturbation budget (repeat for a curve). Default: 0.03 and 0.1."
    ),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    steps: int | None = typer.Option(
        None, "--steps", min=1, help="Steps per attack (preset default)."
    ),
    queries: int | None = typer.Option(None, "--queries", min=1, help="Square query budget."),
    seed: int = SeedOption,
    samples: int | None = typer.Option(
        500, "--samples", min=1, help="Evaluate the first N samples."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per attack batch."),
    min_robust_accuracy: float | None = typer.Option(
        None, "--min-robust-accuracy", help="HIGH finding when robust accuracy is below this."
    ),
    sanity: bool = typer.Option(
        False, "--sanity/--no-sanity", help="Run the gradient-masking sanity checks too."
    ),
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
    """Robust accuracy at each --eps under an ensemble of attacks, as a report."""
    from mlwarden.cli.common import emit_report, load_subject, parse_fail_on
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import ParameterError
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.robustness import check_preset, evaluate_robustness

    parse_fail_on(fail_on)
    preset = check_preset(preset)
    if min_robust_accuracy is not None and not 0.0 <= min_robust_accuracy <= 1.0:
        raise ParameterError(f"--min-robust-accuracy must be in [0, 1], got {min_robust_accuracy}")
    budgets = list(eps) or [0.03, 0.1]
    loaded, dataset = load_subject(
        model,
        data,
        factory=factory,
        spec=spec,
        config=config,
        device=device,
        allow=allow,
        samples=samples,
    )
    assert dataset is not None
    if not isinstance(loaded, Classifier) and preset != "blackbox":
        raise ParameterError(
            f"preset '{preset}' needs gradients but '{model}' is a black-box model; "
            "use --preset blackbox"
        )
    report = Report(
        title="mlwarden robustness evaluation",
        subject={
            "model": model,
            "data": data,
            "samples": len(dataset),
            "preset": preset,
            "norm": norm,
            "eps": budgets,
            "seed": seed,
        },
    )
    note_assumptions(report, loaded)
    with progress_bars(progress) as bar:
        result = evaluate_robustness(
            loaded,
            dataset.x,
            dataset.y,
            budgets,
            preset=preset,
            norm=norm,
            steps=steps,
            queries=queries,
            seed=seed,
            batch_size=batch_size,
            progress=bar,
        )
        result.to_report(report, min_robust_accuracy=min_robust_accuracy)
        if sanity and isinstance(loaded, Classifier):
            from mlwarden.evaluation.sanity import run_sanity_checks

            run_sanity_checks(
                loaded,
                dataset.x,
                dataset.y,
                budgets,
                norm=norm,
                steps=steps or 20,
                seed=seed,
                progress=bar,
            ).to_report(report)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
