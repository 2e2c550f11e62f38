"""``mlwarden backdoor``: find backdoors in a model (detect) or in a training set (scan-data).

Thin adapters: the flags override `BackdoorSettings` / `DataScanSettings` (where every
default lives) and `run_backdoor_scan` / `run_data_scan` do the work; the ``backdoor``
audit check is configured by `BackdoorSettings` and calls the same runner. A flag left
out keeps the settings' default.
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
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="neural_cleanse or universal_perturbation (repeatable; default: all).",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="MAD anomaly index above which a class is flagged (default: cuts calibrated on "
        "clean models; see docs/backdoors.md).",
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Optimisation steps per method (default: the detector's)."
    ),
    samples: int | None = typer.Option(None, "--samples", help="Use at most N clean samples."),
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
    """Reverse-engineer a trigger per class and flag anomalously small ones.

    Neural Cleanse (patch triggers) and the universal perturbation (blended triggers).
    """
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.defenses.detection.model_scan import BackdoorSettings, run_backdoor_scan

    fail_threshold(fail_on)
    settings = settings_from_flags(
        BackdoorSettings,
        {"methods": method or None, "threshold": threshold, "steps": steps, "samples": samples},
        names={"methods": "--method"},
    )
    loaded, dataset = load_subject(
        model,
        data,
        factory=factory,
        spec=spec,
        config=config,
        device=device,
        allow=allow,
        samples=settings.samples,
    )
    assert dataset is not None
    report = Report(
        title="mlwarden backdoor scan",
        subject={
            "model": model,
            "data": data,
            "samples": len(dataset),
            "methods": list(settings.methods),
            "threshold": "calibrated" if settings.threshold is None else settings.threshold,
            "seed": seed,
        },
    )
    with progress_bars(progress) as bar:
        run_backdoor_scan(
            loaded, dataset, settings, report=report, seed=seed, subject=model, progress=bar
        )
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


@backdoor_app.command("scan-data")
def scan_data_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model trained on the data (.pt2 or weights)."
    ),
    data: str = typer.Option(..., "--data", "-d", help="The training set that may be poisoned."),
    method: str | None = typer.Option(
        None, "--method", help="activation_clustering, spectral_signatures or both."
    ),
    eps: float | None = typer.Option(
        None, "--eps", help="Upper bound on the poisoning rate (spectral signatures)."
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
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.core.findings import Report
    from mlwarden.defenses.detection.data_scan import DataScanSettings, run_data_scan

    fail_threshold(fail_on)
    settings = settings_from_flags(DataScanSettings, {"method": method, "eps": eps, "layer": layer})
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
    report = Report(
        title="mlwarden training-data backdoor scan",
        subject={"model": model, "data": data, "samples": len(dataset), "method": settings.method},
    )
    run_data_scan(loaded, dataset, settings, report=report, seed=seed, subject=data)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
