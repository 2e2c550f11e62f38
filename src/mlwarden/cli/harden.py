"""``mlwarden harden``: a hardened copy of a model, measured before and after.

A thin adapter: the flags override `HardenSettings` (where every default lives) and
`run_harden` does the work. The copy is written in the format the model came in: a
``.pt2`` file gives a ``.pt2`` (a plain ``torch.export`` file included), weights with
``--factory`` give ``.safetensors`` for the same factory.
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
from mlwarden.cli.flags import default_of
from mlwarden.defenses.training.hardening_settings import HardenSettings

_D = {name: default_of(HardenSettings, name) for name in HardenSettings.model_fields}
"""What ``--help`` shows as each flag's default: the settings model's own."""


def harden_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model file (.pt2, or weights with --factory)."
    ),
    data: str = typer.Option(
        ..., "--data", "-d", help="Training data (.npz, .npy, .csv, folder, digits)."
    ),
    method: str | None = typer.Option(
        None, "--method", help=f"pgd, trades, fast or gaussian (default {_D['method']})."
    ),
    eps: float | None = typer.Option(None, "--eps", help=f"Training radius (default {_D['eps']})."),
    norm: str | None = typer.Option(None, "--norm", help=f"linf or l2 (default {_D['norm']})."),
    epochs: int | None = typer.Option(None, "--epochs", help=f"Epochs (default {_D['epochs']})."),
    lr: float | None = typer.Option(None, "--lr", help=f"Learning rate (default {_D['lr']})."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Training batch size."),
    steps: int | None = typer.Option(
        None, "--steps", help=f"Inner PGD steps of pgd/trades (default {_D['steps']})."
    ),
    alpha: float | None = typer.Option(
        None, "--alpha", help="Inner step size (default 2.5*eps/steps; fast: 1.25*eps)."
    ),
    beta: float | None = typer.Option(
        None, "--beta", help=f"TRADES KL weight (default {_D['beta']})."
    ),
    sigma: float | None = typer.Option(
        None, "--sigma", help=f"Noise std of gaussian (default {_D['sigma']})."
    ),
    warmup_epochs: int | None = typer.Option(
        None,
        "--warmup-epochs",
        help=f"Epochs of the linear eps ramp (default {_D['warmup_epochs']}).",
    ),
    on_overfit: str | None = typer.Option(
        None,
        "--on-overfit",
        help="fast: after catastrophic overfitting, 'fallback' to pgd or 'stop'.",
    ),
    preset: str | None = typer.Option(
        None, "--preset", "-p", help=f"Evasion preset of the measurement (default {_D['preset']})."
    ),
    eval_eps: float | None = typer.Option(
        None, "--eval-eps", help="Radius of the measured robust accuracy (default: --eps)."
    ),
    samples: int | None = typer.Option(
        None, "--samples", help=f"Measure on at most N held-out samples (default {_D['samples']})."
    ),
    certify: bool | None = typer.Option(
        None,
        "--certify/--no-certify",
        help="Also certify before and after by randomized smoothing at --sigma "
        "(default: with --method gaussian).",
    ),
    certify_radius: float | None = typer.Option(
        None,
        "--certify-radius",
        help=f"L2 radius of the certified column (default {_D['certify_radius']}).",
    ),
    certify_n: int | None = typer.Option(
        None, "--certify-n", help=f"Noise samples per certified sample (default {_D['certify_n']})."
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Held-out share of --data for the measurement."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Hardened copy (default: MODEL-METHOD beside the model, same format)."
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
    """Adversarially train a copy of --model (or train it under Gaussian noise) and report
    clean and robust accuracy before and after."""
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.defenses.training.harden import run_harden

    fail_threshold(fail_on)
    settings = settings_from_flags(
        HardenSettings,
        {
            "method": method,
            "eps": eps,
            "norm": norm,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "steps": steps,
            "alpha": alpha,
            "beta": beta,
            "sigma": sigma,
            "warmup_epochs": warmup_epochs,
            "on_overfit": on_overfit,
            "preset": preset,
            "eval_eps": eval_eps,
            "samples": samples,
            "test_fraction": test_fraction,
            "certify": certify,
            "certify_radius": certify_radius,
            "certify_n": certify_n,
        },
    )
    target = output_path(Path(model), settings.method, out)  # refused before any training
    loaded, dataset = load_subject(
        model, data, factory=factory, spec=spec, config=config, device=device, allow=allow
    )
    assert dataset is not None
    report = Report(title="mlwarden harden")
    with progress_bars(progress) as bar:
        run = run_harden(loaded, dataset, settings, report=report, seed=seed, progress=bar)
    saved = save_like(run.classifier, target)
    report.subject.update(
        {
            "model": model,
            "data": data,
            "method": settings.method,
            "hardened": str(saved),
            "seed": seed,
            "epochs": settings.epochs,
        }
    )
    if fmt is OutputFormat.text and output is None:
        from mlwarden.cli.ui import console
        from mlwarden.report.terminal import table_renderable

        console.print(table_renderable(report.tables[0]))
        console.print(f"hardened copy: {saved}")
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


def output_path(model: Path, method: str, out: Path | None) -> Path:
    """Where the copy goes: ``out``, else ``MODEL-METHOD`` beside the model, in the model's
    format (``.pt2`` stays ``.pt2``, weights become ``.safetensors``)."""
    from mlwarden.core.errors import ParameterError

    suffix = ".pt2" if model.suffix.lower() == ".pt2" else ".safetensors"
    if model.suffix.lower() == ".onnx":
        raise ParameterError(
            f"'{model.name}' is an ONNX black box: it cannot be trained; give the model as .pt2 "
            "or weights with --factory"
        )
    path = out if out is not None else model.with_name(f"{model.stem}-{method}{suffix}")
    if path.suffix.lower() != suffix:
        raise ParameterError(
            f"--out '{path}' must end in {suffix}: the copy is saved in the format the model "
            f"came in ('{model.name}')"
        )
    if path.resolve() == model.resolve():
        raise ParameterError(f"--out '{path}' is the model itself; give another path")
    return path


def save_like(classifier: object, path: Path) -> Path:
    """Write ``classifier`` to ``path`` as ``.pt2`` (a dynamic batch where the graph allows
    it, else a static one, which the loader pads) or ``.safetensors``."""
    from mlwarden.core.errors import InputError
    from mlwarden.io.export import save_pt2, save_weights

    if path.suffix.lower() == ".pt2":
        try:
            return save_pt2(classifier, path)  # type: ignore[arg-type]
        except InputError:
            # a module rebuilt from an unflattened .pt2 exports only with a static batch
            return save_pt2(classifier, path, dynamic_batch=False)  # type: ignore[arg-type]
    return save_weights(classifier, path)  # type: ignore[arg-type]
