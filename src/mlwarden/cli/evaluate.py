"""``mlwarden evaluate robustness``: robust accuracy curve with an attack ensemble.

A thin adapter over `mlwarden.evaluation.evasion.run_robustness`, the runner of the
``evasion`` audit check too: the flags default to ``None`` and only those given replace
the defaults of `RobustnessSettings`, so the command and ``[checks.evasion]`` agree.

A Hugging Face folder (``--model FOLDER`` with a ``config.json``) is a text model: it loads
through the same gate, its ``--data`` is labelled text (``.jsonl``, ``.csv``, ``.tsv``; the
columns named by ``--text-column`` and ``--label-column``) and the text presets run on it
(docs/text-attacks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlwarden.attacks.evasion.registry import PRESETS, help_lines
from mlwarden.attacks.text.registry import TEXT_PRESETS
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
from mlwarden.evaluation.certify import CertifySettings
from mlwarden.evaluation.evasion import RobustnessSettings

evaluate_app = typer.Typer(
    help="Evaluate a model (robustness curves, sanity checks, certified robustness).",
    no_args_is_help=True,
    add_completion=False,
)


_DEFAULT = {name: default_of(RobustnessSettings, name) for name in RobustnessSettings.model_fields}
"""What ``--help`` shows as each flag's default: the settings model's own."""
_CERTIFY = {name: default_of(CertifySettings, name) for name in CertifySettings.model_fields}


@evaluate_app.command("robustness")
def robustness_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    data: str = typer.Option(..., "--data", "-d", help="Data (.npz, .npy, .csv, folder, digits)."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        "-p",
        help=(
            f"Attack ensemble. {help_lines(PRESETS.values())}. Text models: "
            f"{help_lines(TEXT_PRESETS.values())} (default for a text model: text)."
        ),
        show_default=_DEFAULT["preset"],
    ),
    eps: list[float] = typer.Option(
        [],
        "--eps",
        help="Perturbation budget (repeat for a curve).",
        show_default=_DEFAULT["eps"],
    ),
    norm: str | None = typer.Option(
        None, "--norm", help="linf or l2.", show_default=_DEFAULT["norm"]
    ),
    steps: int | None = typer.Option(None, "--steps", help="Steps per attack (preset default)."),
    queries: int | None = typer.Option(
        None, "--queries", help="Query budget of black-box attacks (preset default)."
    ),
    seed: int = SeedOption,
    samples: int | None = typer.Option(
        None, "--samples", help="Evaluate the first N samples.", show_default=_DEFAULT["samples"]
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per attack batch."),
    min_robust_accuracy: float | None = typer.Option(
        None,
        "--min-robust-accuracy",
        help="HIGH finding when robust accuracy at the largest eps is below this.",
        show_default=_DEFAULT["min_robust_accuracy"],
    ),
    sanity: bool | None = typer.Option(
        None,
        "--sanity/--no-sanity",
        help="Run the gradient-masking sanity checks too.",
        show_default=_DEFAULT["sanity"],
    ),
    max_words_share: float | None = typer.Option(
        None,
        "--max-words-share",
        help="Text models: at most this share of a sentence's words changed.",
        show_default=_DEFAULT["max_words_share"],
    ),
    min_similarity: float | None = typer.Option(
        None,
        "--min-similarity",
        help="Text models: sentence similarity to the original kept at least.",
        show_default=_DEFAULT["min_similarity"],
    ),
    text_column: str = typer.Option("text", "--text-column", help="Text models: text column."),
    label_column: str = typer.Option("label", "--label-column", help="Text models: label column."),
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
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.evasion import run_robustness

    fail_threshold(fail_on)
    settings: RobustnessSettings = settings_from_flags(
        RobustnessSettings,
        {
            "preset": preset,
            "eps": eps,
            "norm": norm,
            "steps": steps,
            "queries": queries,
            "samples": samples,
            "min_robust_accuracy": min_robust_accuracy,
            "sanity": sanity,
            "max_words_share": max_words_share,
            "min_similarity": min_similarity,
        },
    )
    dataset: Any
    if is_text_folder(model):
        loaded, dataset = load_text_subject(
            model,
            data,
            config=config,
            device=device,
            allow=allow,
            text_column=text_column,
            label_column=label_column,
        )
        preset_name = settings.text_preset(loaded) or settings.preset
        budget: dict[str, Any] = {
            "max_words_share": settings.max_words_share,
            "min_similarity": settings.min_similarity,
        }
    else:
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
        preset_name = settings.preset
        budget = {"norm": settings.norm, "eps": settings.eps}
    assert dataset is not None
    report = Report(
        title="mlwarden robustness evaluation",
        subject={
            "model": model,
            "data": data,
            "samples": min(len(dataset), settings.samples),
            "preset": preset_name,
            **budget,
            "seed": seed,
        },
    )
    with progress_bars(progress) as bar:
        run_robustness(
            loaded, dataset, settings, report, seed=seed, batch_size=batch_size, progress=bar
        )
    code = emit_report(report, fmt, output, fail_on)
    if is_text_folder(model) and OutputFormat(fmt) is OutputFormat.text and output is None:
        print_text_tables(report)
    raise typer.Exit(code)


@evaluate_app.command("certify")
def certify_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    data: str = typer.Option(..., "--data", "-d", help="Data (.npz, .npy, .csv, folder, digits)."),
    sigma: float | None = typer.Option(
        None,
        "--sigma",
        help="Std of the Gaussian noise, in the units of the input bounds.",
        show_default=_CERTIFY["sigma"],
    ),
    n: int | None = typer.Option(
        None, "--n", help="Noise samples that estimate pA.", show_default=_CERTIFY["n"]
    ),
    n0: int | None = typer.Option(
        None, "--n0", help="Noise samples that select the class.", show_default=_CERTIFY["n0"]
    ),
    alpha: float | None = typer.Option(
        None,
        "--alpha",
        help="Failure probability of each certificate.",
        show_default=_CERTIFY["alpha"],
    ),
    radii: list[float] = typer.Option(
        [],
        "--radius",
        "--radii",
        help="L2 radius to report certified accuracy at (repeat for a curve).",
        show_default=_CERTIFY["radii"],
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="Certify the first N samples.", show_default=_CERTIFY["samples"]
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Noisy samples per forward pass (default: ~262k values)."
    ),
    at_radius: float | None = typer.Option(
        None,
        "--at-radius",
        help="The radius --min-certified-accuracy applies at.",
        show_default=_CERTIFY["at_radius"],
    ),
    min_certified_accuracy: float | None = typer.Option(
        None,
        "--min-certified-accuracy",
        help="HIGH finding when certified accuracy at --at-radius is below this.",
        show_default=_CERTIFY["min_certified_accuracy"],
    ),
    output_npz: Path | None = typer.Option(
        None, "--output-npz", help="Write the per-sample certificates (.npz)."
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
    """Certified L2 robustness by randomized smoothing (Cohen et al. 2019), as a report."""
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.certify import require_certify, run_certify, save_certificates

    fail_threshold(fail_on)
    settings: CertifySettings = settings_from_flags(
        CertifySettings,
        {
            "sigma": sigma,
            "n": n,
            "n0": n0,
            "alpha": alpha,
            "radii": radii,
            "samples": samples,
            "batch_size": batch_size,
            "at_radius": at_radius,
            "min_certified_accuracy": min_certified_accuracy,
        },
        names={"radii": "--radius"},
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
    require_certify(loaded)
    report = Report(
        title="mlwarden certified robustness (randomized smoothing)",
        subject={
            "model": model,
            "data": data,
            "samples": min(len(dataset), settings.samples),
            "sigma": settings.sigma,
            "n0": settings.n0,
            "n": settings.n,
            "alpha": settings.alpha,
            "seed": seed,
        },
    )
    with progress_bars(progress) as bar:
        result = run_certify(loaded, dataset, settings, report, seed=seed, progress=bar)
    if output_npz is not None:
        save_certificates(result, output_npz, report)
    code = emit_report(report, fmt, output, fail_on)
    if OutputFormat(fmt) is OutputFormat.text and output is None:
        print_tables(report, "certified-")
    raise typer.Exit(code)


def print_tables(report: Any, prefix: str) -> None:
    """The tables whose id starts with ``prefix`` under the terminal summary (which shows
    no tables)."""
    from mlwarden.cli.ui import console
    from mlwarden.report.terminal import table_renderable

    for table in report.tables:
        if table.id.startswith(prefix):
            console.print(table_renderable(table))


def print_text_tables(report: Any) -> None:
    """The attack costs and the example pairs under the terminal summary (which shows no
    tables): for text the examples are the result a reader needs to judge."""
    from mlwarden.cli.ui import console
    from mlwarden.report.terminal import table_renderable

    for table in report.tables:
        if table.id.startswith("evasion-text-"):
            console.print(table_renderable(table))


def is_text_folder(model: str) -> bool:
    """A Hugging Face model folder (it has a ``config.json``): the text path."""
    path = Path(model)
    return path.is_dir() and (path / "config.json").is_file()


def load_text_subject(
    model: str,
    data: str,
    *,
    config: Path | None,
    device: str,
    allow: list[str],
    text_column: str,
    label_column: str,
) -> tuple[Any, Any]:
    """A text model folder (through the gate and the signing policy) and its labelled text,
    whose labels must be the model's class names."""
    from mlwarden.core.contract import Capability, require
    from mlwarden.core.errors import DataError
    from mlwarden.io.models import load_model
    from mlwarden.io.text_data import load_text_data
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    policy = policy_from_config(config) if config is not None else None
    with using_policy(policy):
        loaded = load_model(model, device=device, allow=tuple(allow))
    require(loaded, (Capability.TEXT_INPUTS, Capability.SCORES), by="text robustness")
    dataset = load_text_data(
        data,
        text_column=text_column,
        label_column=label_column,
        class_names=loaded.spec.class_names,
    )
    if len(dataset) == 0:
        raise DataError(f"data set '{data}' is empty")
    return loaded, dataset
