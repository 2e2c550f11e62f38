"""``mlwarden attack evasion``: run one evasion attack on a model and data set.

A thin adapter over `mlwarden.evaluation.evasion.run_evasion`: the flags default to
``None`` and only those given replace the defaults of `EvasionSettings`. The attack
names and their help come from the attack registry. No torch import at module level
(``mlwarden --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.attacks.evasion.registry import ATTACKS, help_lines
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
    load_subject,
)
from mlwarden.cli.flags import default_of
from mlwarden.evaluation.evasion import EvasionSettings

attack_app = typer.Typer(
    help="Run attacks against a model (evasion, extraction).",
    no_args_is_help=True,
    add_completion=False,
)


_DEFAULT = {name: default_of(EvasionSettings, name) for name in EvasionSettings.model_fields}
"""What ``--help`` shows as each flag's default: the settings model's own."""


@attack_app.command("evasion")
def evasion_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    data: str = typer.Option(..., "--data", "-d", help="Data (.npz, .npy, .csv, folder, digits)."),
    attack: str | None = typer.Option(
        None,
        "--attack",
        "-a",
        help=f"Attack. {help_lines(ATTACKS.values())}.",
        show_default=_DEFAULT["attack"],
    ),
    eps: float | None = typer.Option(
        None, "--eps", help="Perturbation budget in the chosen norm.", show_default=_DEFAULT["eps"]
    ),
    norm: str | None = typer.Option(
        None, "--norm", help="linf or l2.", show_default=_DEFAULT["norm"]
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Iterations (gradient attacks, hopskipjump).",
        show_default=_DEFAULT["steps"],
    ),
    restarts: int | None = typer.Option(
        None, "--restarts", help="Random restarts (pgd, apgd).", show_default=_DEFAULT["restarts"]
    ),
    queries: int | None = typer.Option(
        None,
        "--queries",
        help="Query budget per sample (square, hopskipjump).",
        show_default=_DEFAULT["queries"],
    ),
    seed: int = SeedOption,
    samples: int | None = typer.Option(None, "--samples", help="Attack the first N samples."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per attack batch."),
    min_robust_accuracy: float | None = typer.Option(
        None,
        "--min-robust-accuracy",
        help="HIGH finding when robust accuracy is below this.",
        show_default=_DEFAULT["min_robust_accuracy"],
    ),
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    output_npz: Path | None = typer.Option(
        None, "--output-npz", help="Write x_adv, y, success, clean_correct to this .npz."
    ),
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Attack a model and report its robust accuracy (optionally save the adversarial batch)."""
    from mlwarden.cli.common import emit_report, fail_threshold
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.evasion import run_evasion, save_adversarial

    fail_threshold(fail_on)  # a bad --fail-on fails before minutes of attacking
    settings: EvasionSettings = settings_from_flags(
        EvasionSettings,
        {
            "attack": attack,
            "eps": eps,
            "norm": norm,
            "steps": steps,
            "restarts": restarts,
            "queries": queries,
            "samples": samples,
            "min_robust_accuracy": min_robust_accuracy,
        },
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
        title=f"mlwarden attack evasion: {settings.attack}",
        subject={"model": model, "data": data, "samples": len(dataset)},
    )
    with progress_bars(progress) as bar:
        result = run_evasion(
            loaded, dataset, settings, report, seed=seed, batch_size=batch_size, progress=bar
        )
    if output_npz is not None:
        save_adversarial(result, dataset.y, output_npz, report)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


# `attack extraction` lives in its own module; it is part of this group.
from mlwarden.cli.attack_extraction import extraction_command  # noqa: E402

attack_app.command("extraction")(extraction_command)
