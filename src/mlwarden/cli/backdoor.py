"""``mlwarden backdoor``: find backdoors in a model (detect) or in a training set (scan-data)."""

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

backdoor_app = typer.Typer(
    help="Find backdoors: in a model from weights and a small clean set, or in a training set.",
    no_args_is_help=True,
    add_completion=False,
)


@backdoor_app.command("detect")
def detect_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model file (.pt2 or weights with --factory)."
    ),
    data: str = typer.Option(
        ..., "--data", "-d", help="A small CLEAN labelled set (.npz, .npy, .csv, folder, digits)."
    ),
    method: list[str] = typer.Option(
        [], "--method", help="neural_cleanse, universal_perturbation (repeatable; default both)."
    ),
    threshold: float = typer.Option(
        2.0, "--threshold", help="Anomaly index above which a class is flagged."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimisation steps per method."),
    samples: int = typer.Option(500, "--samples", min=2, help="Use at most N clean samples."),
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
    """Reverse-engineer a trigger per class and flag anomalously small ones (Neural Cleanse +
    universal perturbation)."""
    from mlwarden.cli.common import emit_report, load_subject, parse_fail_on
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import InputError
    from mlwarden.core.findings import Report
    from mlwarden.defenses.detection.model_scan import DEFAULT_METHODS, backdoor_report, scan_model

    parse_fail_on(fail_on)
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
    if not isinstance(loaded, Classifier):
        raise InputError(
            f"'{model}' is a black-box model; backdoor detection needs its weights "
            "(.pt2 or weights file)"
        )
    methods = tuple(method) or DEFAULT_METHODS
    report = Report(
        title="mlwarden backdoor scan",
        subject={
            "model": model,
            "data": data,
            "samples": len(dataset),
            "methods": list(methods),
            "threshold": threshold,
            "seed": seed,
        },
    )
    note_assumptions(report, loaded)
    with progress_bars(progress) as bar:
        scans = scan_model(
            loaded,
            dataset.x,
            dataset.y,
            methods=methods,
            threshold=threshold,
            steps=steps,
            max_samples=samples,
            seed=seed,
            progress=bar,
        )
    backdoor_report(scans, loaded.spec.class_names, report=report, subject=model)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


@backdoor_app.command("scan-data")
def scan_data_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model trained on the data (.pt2 or weights)."
    ),
    data: str = typer.Option(..., "--data", "-d", help="The training set that may be poisoned."),
    method: str = typer.Option(
        "both", "--method", help="activation_clustering, spectral_signatures or both."
    ),
    eps: float = typer.Option(
        0.1, "--eps", help="Upper bound on the poisoning rate (spectral signatures)."
    ),
    layer: str | None = typer.Option(None, "--layer", help="Layer whose activations are analysed."),
    seed: int = SeedOption,
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
) -> None:
    """Report training samples that look poisoned (activation clustering, spectral signatures)."""
    from mlwarden.cli.common import emit_report, load_subject, parse_fail_on
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import InputError
    from mlwarden.core.findings import Report
    from mlwarden.defenses.detection.data_scan import data_report, scan_data

    parse_fail_on(fail_on)
    loaded, dataset = load_subject(
        model,
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
            f"'{model}' is a black-box model; data-level detection needs its activations"
        )
    report = Report(
        title="mlwarden training-data backdoor scan",
        subject={"model": model, "data": data, "samples": len(dataset), "method": method},
    )
    note_assumptions(report, loaded)
    results = scan_data(
        loaded, dataset.x, dataset.y, method=method, eps=eps, layer=layer, seed=seed
    )
    data_report(results, dataset.class_names, report=report, subject=data)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
