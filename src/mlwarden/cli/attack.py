"""``mlwarden attack evasion``: run one evasion attack on a model and data set.

Thin: parse, load (through the safety gate), call the library, write the adversarial
batch and a report. No torch import at module level (``mlwarden --help`` stays fast).
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
    load_subject,
)

attack_app = typer.Typer(
    help="Run attacks against a model (evasion, extraction).",
    no_args_is_help=True,
    add_completion=False,
)

ATTACK_HELP = "fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, cw, deepfool, square"


@attack_app.command("evasion")
def evasion_command(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    data: str = typer.Option(..., "--data", "-d", help="Data (.npz, .npy, .csv, folder, digits)."),
    attack: str = typer.Option("pgd", "--attack", "-a", help=f"Attack: {ATTACK_HELP}."),
    eps: float = typer.Option(0.1, "--eps", help="Perturbation budget in the chosen norm."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    steps: int = typer.Option(20, "--steps", help="Iterations (gradient attacks)."),
    restarts: int = typer.Option(1, "--restarts", help="Random restarts (pgd, apgd)."),
    queries: int = typer.Option(5000, "--queries", help="Query budget (square)."),
    seed: int = SeedOption,
    samples: int | None = typer.Option(
        None, "--samples", min=1, help="Attack the first N samples."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per attack batch."),
    min_robust_accuracy: float = typer.Option(
        0.5, "--min-robust-accuracy", help="HIGH finding when robust accuracy is below this."
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
    from mlwarden.cli.common import emit_report, parse_fail_on

    parse_fail_on(fail_on)  # a bad --fail-on fails before minutes of attacking
    report = run_evasion(
        model=model,
        data=data,
        attack=attack,
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        queries=queries,
        seed=seed,
        samples=samples,
        batch_size=batch_size,
        min_robust_accuracy=min_robust_accuracy,
        factory=factory,
        spec=spec,
        config=config,
        allow=allow,
        device=device,
        output_npz=output_npz,
        progress=progress,
    )
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


def run_evasion(
    *,
    model: str,
    data: str,
    attack: str,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    queries: int,
    seed: int,
    samples: int | None,
    batch_size: int,
    min_robust_accuracy: float,
    factory: str | None,
    allow: list[str],
    device: str,
    output_npz: Path | None,
    spec: Path | None = None,
    config: Path | None = None,
    progress: bool,
) -> Any:
    """The work behind ``attack evasion``; returns the `Report`."""
    import numpy as np

    from mlwarden.attacks.evasion import attack_in_batches, build_attack, lp_norm
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import ParameterError
    from mlwarden.core.findings import Artefact, Report
    from mlwarden.evaluation.robustness import AttackCost, RobustnessResult

    if not 0.0 <= min_robust_accuracy <= 1.0:
        raise ParameterError(f"--min-robust-accuracy must be in [0, 1], got {min_robust_accuracy}")
    runner = build_attack(
        attack, eps=eps, norm=norm, steps=steps, seed=seed, restarts=restarts, queries=queries
    )
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
    if not isinstance(loaded, Classifier) and runner.name != "square":
        raise ParameterError(
            f"attack '{attack}' needs gradients but '{model}' is a black-box model; "
            "use --attack square"
        )
    with progress_bars(progress) as bar:
        res = attack_in_batches(
            runner, loaded, dataset.x, dataset.y, batch_size=batch_size, progress=bar
        )
    norm_name = runner.norm if hasattr(runner, "norm") else norm
    summary = RobustnessResult(
        preset=runner.name,
        norm=norm_name,
        eps=[float(eps)],
        y=dataset.y,
        clean_correct=res.clean_correct.cpu(),
        robust={float(eps): (res.clean_correct & ~res.success).cpu()},
        x_adv={},
        class_names=tuple(loaded.spec.class_names),
    )
    report = Report(
        title=f"mlwarden attack evasion: {runner.name}",
        subject={
            "model": model,
            "data": data,
            "samples": len(dataset),
            "attack": runner.name,
            "params": res.params,
        },
    )
    note_assumptions(report, loaded)
    summary.costs = [
        AttackCost(
            runner.name,
            float(eps),
            int(res.clean_correct.sum()),
            0,
            res.gradient_evaluations,
            res.queries,
            res.elapsed_s,
        )
    ]
    summary.seconds = res.elapsed_s
    perturbation = lp_norm(res.x_adv.cpu() - dataset.x, norm_name)
    fooled = res.success.cpu() & res.clean_correct.cpu()
    summary.costs[0].fooled = int(fooled.sum())
    summary.to_report(report, min_robust_accuracy=min_robust_accuracy, check="attack.evasion")
    report.metrics.update(
        {
            f"evasion.{runner.name}.{norm_name}.attack_success_rate": round(
                float(fooled.sum()) / max(int(res.clean_correct.sum()), 1), 6
            ),
            f"evasion.{runner.name}.{norm_name}.median_perturbation": (
                round(float(perturbation[fooled].median()), 6) if bool(fooled.any()) else None
            ),
        }
    )
    if output_npz is not None:
        output_npz = Path(output_npz)
        output_npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            output_npz,
            x_adv=res.x_adv.cpu().numpy(),
            y=dataset.y.cpu().numpy(),
            success=res.success.cpu().numpy(),
            clean_correct=res.clean_correct.cpu().numpy(),
        )
        report.artefacts.append(
            Artefact(
                name="adversarial examples",
                path=str(output_npz),
                media_type="application/x-npz",
                description="x_adv, y, success, clean_correct (load with numpy.load)",
            )
        )
    return report
