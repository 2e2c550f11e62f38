"""The evasion capability's front door: one settings model and one runner per command.

* `RobustnessSettings` + `run_robustness`: ``mlwarden evaluate robustness`` *and* the
  ``evasion`` audit check (``[checks.evasion]`` is this model), so the two cannot drift;
* `EvasionSettings` + `run_evasion`: ``mlwarden attack evasion`` (one attack, its
  adversarial batch kept).

Every default lives in the settings model; the CLI flags default to ``None`` and only
the flags given override it. A runner takes the loaded model and data, checks what the
model must offer before any work (`mlwarden.core.contract.require`, through the attack
registry) and fills a `Report`.

No torch import at module level: the audit registry imports the settings to validate
``mlwarden.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlwarden.attacks.evasion.registry import (
    ATTACK_NAMES,
    BOTH_NORMS,
    DEFAULT_PRESET,
    DEFAULT_QUERIES,
    DEFAULT_STEPS,
    PRESET_NAMES,
    canonical,
    require_attack,
    require_preset,
)
from mlwarden.audit.registry import CheckConfig
from mlwarden.core.contract import Capability, note_assumptions, require
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    from mlwarden.attacks.base import AttackResult
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.robustness import RobustnessResult
    from mlwarden.io.dataset import Dataset

PresetName = Literal[PRESET_NAMES]  # type: ignore[valid-type]
AttackName = Literal[ATTACK_NAMES]  # type: ignore[valid-type]
NormName = Literal[BOTH_NORMS]  # type: ignore[valid-type]
Eps = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]

DEFAULT_MIN_ROBUST_ACCURACY = 0.3
"""A policy, not a measurement: set it to the robust accuracy your system must keep."""
MinRobustAccuracy = Annotated[
    float | None,
    Field(ge=0.0, le=1.0, description="HIGH finding below this robust accuracy at the largest eps"),
]


def _canonical(value: Any) -> Any:
    return canonical(value) if isinstance(value, str) else value


class RobustnessSettings(CheckConfig):
    """Robust accuracy curve under a preset (``evaluate robustness``, ``[checks.evasion]``)."""

    preset: PresetName = Field(DEFAULT_PRESET, description="ensemble of attacks")
    norm: NormName = "linf"
    eps: list[Eps] = Field(default_factory=lambda: [0.03, 0.1], min_length=1)
    steps: int | None = Field(None, ge=1, description="steps per attack; preset default if unset")
    queries: int | None = Field(
        None, ge=1, description="query budget of black-box attacks; preset default if unset"
    )
    samples: int = Field(500, ge=1, description="evaluate at most this many samples")
    min_robust_accuracy: MinRobustAccuracy = DEFAULT_MIN_ROBUST_ACCURACY
    sanity: bool = Field(False, description="gradient-masking checks (Carlini et al. 2019)")
    seed: int | None = Field(None, description="defaults to the audit seed (--seed)")

    _names = field_validator("preset", "norm", mode="before")(_canonical)


class EvasionSettings(BaseModel):
    """One attack at one budget (``attack evasion``)."""

    model_config = ConfigDict(extra="forbid")

    attack: AttackName = "pgd"
    eps: Eps = Field(0.1, description="perturbation budget in the chosen norm")
    norm: NormName = "linf"
    steps: int = Field(
        DEFAULT_STEPS, ge=1, description="iterations (gradient attacks, hopskipjump)"
    )
    restarts: int = Field(1, ge=1, description="random restarts (pgd, apgd)")
    queries: int = Field(DEFAULT_QUERIES, ge=1, description="query budget (square, hopskipjump)")
    samples: int | None = Field(None, ge=1, description="attack the first N samples")
    min_robust_accuracy: MinRobustAccuracy = DEFAULT_MIN_ROBUST_ACCURACY

    _names = field_validator("attack", "norm", mode="before")(_canonical)


# -- runners ------------------------------------------------------------------------------------
def require_robustness(model: Any, settings: RobustnessSettings) -> None:
    """Refuse, before any work, a preset (or sanity checks) the model cannot serve."""
    require_preset(model, settings.preset)
    if settings.sanity:
        require(model, (Capability.GRADIENTS,), by="the sanity check", hint="turn sanity off")


def run_robustness(
    model: Any,
    data: Dataset,
    settings: RobustnessSettings,
    report: Report,
    *,
    seed: int = 0,
    batch_size: int = 256,
    progress: ProgressCallback = null_progress,
) -> RobustnessResult:
    """Robust accuracy of ``model`` on the first ``settings.samples`` of ``data``, into ``report``.

    ``seed`` is the caller's (audit or command) seed, used unless ``settings.seed`` is set.
    """
    from mlwarden.evaluation.robustness import evaluate_robustness

    require_robustness(model, settings)
    note_assumptions(report, model, check="evasion")
    data = data.take(settings.samples)
    seed = settings.seed if settings.seed is not None else seed
    result = evaluate_robustness(
        model,
        data.x,
        data.y,
        settings.eps,
        preset=settings.preset,
        norm=settings.norm,
        steps=settings.steps,
        queries=settings.queries,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    result.to_report(report, min_robust_accuracy=settings.min_robust_accuracy)
    if settings.sanity:
        from mlwarden.evaluation.sanity import run_sanity_checks

        steps = {} if settings.steps is None else {"steps": settings.steps}
        run_sanity_checks(
            model,
            data.x,
            data.y,
            settings.eps,
            norm=settings.norm,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            **steps,
        ).to_report(report)
    return result


def run_evasion(
    model: Any,
    data: Dataset,
    settings: EvasionSettings,
    report: Report,
    *,
    seed: int = 0,
    batch_size: int = 256,
    progress: ProgressCallback = null_progress,
) -> AttackResult:
    """Run ``settings.attack`` on ``data``, report robust accuracy and success; return it."""
    from mlwarden.attacks.evasion import attack_in_batches, build_attack, lp_norm
    from mlwarden.evaluation.robustness import AttackCost, RobustnessResult

    attack = build_attack(
        settings.attack,
        eps=settings.eps,
        norm=settings.norm,
        steps=settings.steps,
        seed=seed,
        restarts=settings.restarts,
        queries=settings.queries,
    )
    require_attack(model, settings.attack)
    note_assumptions(report, model, check="attack.evasion")
    if settings.samples is not None:
        data = data.take(settings.samples)
    res = attack_in_batches(attack, model, data.x, data.y, batch_size=batch_size, progress=progress)
    eps, norm = float(settings.eps), settings.norm
    clean = res.clean_correct.cpu()
    fooled = res.success.cpu() & clean
    summary = RobustnessResult(
        preset=attack.name,
        norm=norm,
        eps=[eps],
        y=data.y,
        clean_correct=clean,
        robust={eps: clean & ~res.success.cpu()},
        x_adv={},
        class_names=tuple(model.spec.class_names),
        costs=[
            AttackCost(
                attack.name,
                eps,
                int(clean.sum()),
                int(fooled.sum()),
                res.gradient_evaluations,
                res.queries,
                res.elapsed_s,
            )
        ],
        seconds=res.elapsed_s,
    )
    report.subject.setdefault("attack", attack.name)
    report.subject.setdefault("params", res.params)
    summary.to_report(
        report, min_robust_accuracy=settings.min_robust_accuracy, check="attack.evasion"
    )
    perturbation = lp_norm(res.x_adv.cpu() - data.x, norm)
    prefix = f"evasion.{attack.name}.{norm}"
    report.metrics[f"{prefix}.attack_success_rate"] = round(
        float(fooled.sum()) / max(int(clean.sum()), 1), 6
    )
    report.metrics[f"{prefix}.median_perturbation"] = (
        round(float(perturbation[fooled].median()), 6) if bool(fooled.any()) else None
    )
    return res


def save_adversarial(result: AttackResult, y: Any, path: Path, report: Report) -> None:
    """Write ``x_adv``, ``y``, ``success``, ``clean_correct`` to ``path`` (.npz), as an artefact."""
    import numpy as np

    from mlwarden.core.findings import Artefact

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        x_adv=result.x_adv.cpu().numpy(),
        y=y.cpu().numpy(),
        success=result.success.cpu().numpy(),
        clean_correct=result.clean_correct.cpu().numpy(),
    )
    report.artefacts.append(
        Artefact(
            name="adversarial examples",
            path=str(path),
            media_type="application/x-npz",
            description="x_adv, y, success, clean_correct (load with numpy.load)",
        )
    )
