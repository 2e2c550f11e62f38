"""``mlwarden backdoor``: find backdoors in a model (detect) or in a training set (scan-data).

Thin adapters: the flags override `BackdoorSettings` / `DataScanSettings` (where every
default lives) and `run_backdoor_scan` / `run_data_scan` do the work; the ``backdoor``
audit check is configured by `BackdoorSettings` and calls the same runner. A flag left
out keeps the settings' default.

``detect`` given a Hugging Face model folder that is a text encoder vets it for a
task-agnostic backdoor instead (`mlwarden.defenses.detection.encoder_scan`); a text
classifier folder gets the per-class trigger search (`text_classifier_scan`), and with
``--strip`` text STRIP too. ``--data`` is then clean text, labels not needed
(``--text-column`` names its column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        ...,
        "--data",
        "-d",
        help="A small CLEAN labelled set (.npz, .npy, .csv, folder, digits); for a text "
        "encoder, clean text (.jsonl, .csv, .tsv; no labels needed).",
    ),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="neural_cleanse or universal_perturbation (repeatable; default: all; image "
        "classifiers only).",
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="Column of the texts, for a text encoder (default: text)."
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
    strip: bool | None = typer.Option(
        None,
        "--strip/--no-strip",
        help="Text classifiers: also calibrate text STRIP on the clean data and measure it "
        "on inputs carrying the trigger found (default: off).",
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
    """Reverse-engineer a trigger per class and flag anomalously small ones.

    Neural Cleanse (patch triggers) and the universal perturbation (blended triggers). A
    text encoder folder is searched for trigger tokens that collapse clean sentences.
    """
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.defenses.detection.model_scan import BackdoorSettings, run_backdoor_scan

    fail_threshold(fail_on)
    settings = settings_from_flags(
        BackdoorSettings,
        {
            "methods": method or None,
            "threshold": threshold,
            "steps": steps,
            "samples": samples,
            "text_column": text_column,
            "strip": strip,
        },
        names={"methods": "--method"},
    )
    from mlwarden.io.hf import is_hf_folder

    if is_hf_folder(model):
        _detect_text(
            model,
            data,
            settings,
            seed=seed,
            config=config,
            allow=allow,
            device=device,
            fmt=fmt,
            output=output,
            fail_on=fail_on,
            progress=progress,
        )
        return
    if settings.strip:
        from mlwarden.core.errors import ParameterError

        raise ParameterError(
            "--strip is text STRIP, for a text classifier folder; image STRIP is served by "
            "the gateway"
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


def _detect_text(
    model: str,
    data: str,
    settings: Any,
    *,
    seed: int,
    config: Path | None,
    allow: list[str],
    device: str,
    fmt: OutputFormat,
    output: Path | None,
    fail_on: str,
    progress: bool,
) -> None:
    """``detect`` on a Hugging Face folder: the trigger-token search of a text encoder, or
    the per-class trigger search of a text classifier."""
    from mlwarden.cli.common import emit_report
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.core.text import TextClassifier
    from mlwarden.defenses.detection.encoder_scan import load_text_subject, run_encoder_scan
    from mlwarden.defenses.detection.text_classifier_scan import run_classifier_scan

    loaded, texts = load_text_subject(
        model, data, settings, config=config, allow=tuple(allow), device=device
    )
    classifier = isinstance(loaded, TextClassifier)
    methods = ["classifier_trigger_search"] if classifier else ["trigger_token_search"]
    report = Report(
        title="mlwarden backdoor scan",
        subject={
            "model": model,
            "data": data,
            "samples": min(len(texts), settings.samples),
            "methods": methods + (["text_strip"] if settings.strip else []),
            "threshold": "calibrated" if settings.threshold is None else settings.threshold,
            "seed": seed,
        },
    )
    runner = run_classifier_scan if classifier else run_encoder_scan
    with progress_bars(progress) as bar:
        runner(loaded, texts, settings, report=report, seed=seed, subject=model, progress=bar)
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
