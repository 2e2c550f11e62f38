"""The evasion capability's front door: one settings model and one runner per command.

* `RobustnessSettings` + `run_robustness`: ``mlwarden evaluate robustness`` *and* the
  ``evasion`` audit check (``[checks.evasion]`` is this model), so the two cannot drift;
* `EvasionSettings` + `run_evasion`: ``mlwarden attack evasion`` (one attack, its
  adversarial batch kept).

A text model (`TextClassifier`) takes the text presets (`mlwarden.attacks.text.registry`):
with no ``preset`` chosen it gets ``text``, an image preset chosen for it (or a text preset
for an image model) is refused before any work with the contract's message, and
``max_words_share`` / ``min_similarity`` bound its adversarial sentences (``eps`` and
``norm`` apply to tensors only).

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
from mlwarden.attacks.text.constraints import (
    DEFAULT_MAX_WORDS_SHARE,
    DEFAULT_MIN_SIMILARITY,
    TextConstraints,
)
from mlwarden.attacks.text.registry import (
    DEFAULT_TEXT_PRESET,
    TEXT_PRESET_NAMES,
    TEXT_PRESETS,
    require_text_preset,
)
from mlwarden.audit.registry import CheckConfig
from mlwarden.core.contract import Capability, note_assumptions, offers, require
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    from mlwarden.attacks.base import AttackResult
    from mlwarden.attacks.text.ensemble import TextRobustnessResult
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.robustness import RobustnessResult
    from mlwarden.evaluation.shards import ShardExecutor
    from mlwarden.io.dataset import Dataset
    from mlwarden.io.text_data import TextDataset

PresetName = Literal[PRESET_NAMES + TEXT_PRESET_NAMES]  # type: ignore[valid-type]
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
    max_words_share: float = Field(
        DEFAULT_MAX_WORDS_SHARE,
        gt=0.0,
        le=1.0,
        description="text models: at most this share of a sentence's words changed",
    )
    min_similarity: float = Field(
        DEFAULT_MIN_SIMILARITY,
        ge=-1.0,
        le=1.0,
        description="text models: sentence similarity (MiniLM cosine) kept at least",
    )

    _names = field_validator("preset", "norm", mode="before")(_canonical)

    def text_preset(self, model: Any) -> str | None:
        """The text preset to run on ``model``, or ``None`` for the tensor presets: a text
        model with no preset chosen gets `DEFAULT_TEXT_PRESET`."""
        if self.preset in TEXT_PRESETS:
            return self.preset
        takes_text = Capability.TEXT_INPUTS in offers(model)
        return DEFAULT_TEXT_PRESET if takes_text and "preset" not in self.model_fields_set else None


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
    text = settings.text_preset(model)
    if text is not None:
        require_text_preset(model, text)
    else:
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
    executor: ShardExecutor | None = None,
    shard_size: int | None = None,
) -> RobustnessResult | TextRobustnessResult:
    """Robust accuracy of ``model`` on the first ``settings.samples`` of ``data``, into ``report``.

    ``seed`` is the caller's (audit or command) seed, used unless ``settings.seed`` is set.
    With an ``executor`` (``mlwarden audit --ray``) the attacks run in shards of
    ``shard_size`` samples (`mlwarden.evaluation.shards`); text presets and the sanity
    checks still run here.
    """
    from mlwarden.evaluation.robustness import evaluate_robustness

    require_robustness(model, settings)
    note_assumptions(report, model, check="evasion")
    text = settings.text_preset(model)
    if text is not None:
        return run_text_robustness(
            model, data, settings, text, report, seed=seed, progress=progress
        )
    data = data.take(settings.samples)
    seed = settings.seed if settings.seed is not None else seed
    evaluate: Any = evaluate_robustness
    if executor is not None:
        from functools import partial

        from mlwarden.evaluation.shards import DEFAULT_SHARD_SIZE, evaluate_robustness_sharded

        evaluate = partial(
            evaluate_robustness_sharded,
            executor=executor,
            shard_size=shard_size or DEFAULT_SHARD_SIZE,
        )
    result = evaluate(
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


def run_text_robustness(
    model: Any,
    data: TextDataset,
    settings: RobustnessSettings,
    preset: str,
    report: Report,
    *,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> TextRobustnessResult:
    """The text presets on the first ``settings.samples`` labelled sentences, into ``report``."""
    from mlwarden.attacks.text.ensemble import evaluate_text_robustness
    from mlwarden.core.errors import DataError

    if getattr(data, "texts", None) is None or data.labels is None:
        raise DataError("text robustness needs labelled text (a .jsonl, .csv or .tsv file)")
    data = data.subset(range(min(settings.samples, len(data))))
    constraints = TextConstraints(
        max_words_share=settings.max_words_share,
        min_similarity=settings.min_similarity,
        **({} if settings.queries is None else {"queries": settings.queries}),
    )
    result = evaluate_text_robustness(
        model,
        list(data.texts),
        data.labels,
        preset=preset,
        constraints=constraints,
        seed=settings.seed if settings.seed is not None else seed,
        progress=progress,
    )
    result.to_report(report, min_robust_accuracy=settings.min_robust_accuracy)
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
