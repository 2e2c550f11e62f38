"""Robust accuracy with an ensemble of attacks, over a list of perturbation budgets.

The ensemble follows AutoAttack (Croce & Hein, ICML 2020): attacks run in order of
cost and each attacks only the samples that every earlier attack failed to fool, so a
strong cheap attack (APGD-CE) removes most samples before the expensive ones (APGD-T,
Square) run. Budgets are processed in increasing order and a sample fooled at
``eps_i`` counts as fooled at every larger budget (its adversarial example lies inside
the larger ball too), so each larger budget only attacks the survivors. Robust accuracy
is therefore monotone in ``eps`` by construction and cheap to trace as a curve.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.attacks.base import Attack
from mlwarden.attacks.evasion._gradients import attack_in_batches
from mlwarden.attacks.evasion._projection import check_eps, check_norm
from mlwarden.attacks.evasion.registry import DEFAULT_PRESET, require_preset
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress

ATLAS_EVASION = ["AML.T0015", "AML.T0043"]  # Evade ML Model; Craft Adversarial Data
OWASP_EVASION = ["ML01"]  # Input Manipulation Attack


@dataclass
class AttackCost:
    """What one attack of the ensemble spent at one budget."""

    attack: str
    eps: float
    attacked: int
    fooled: int
    gradient_evaluations: int
    queries: int
    seconds: float


@dataclass
class RobustnessResult:
    """Per-sample outcome of an ensemble evaluation at every budget."""

    preset: str
    norm: str
    eps: list[float]
    y: torch.Tensor
    clean_correct: torch.Tensor
    robust: dict[float, torch.Tensor]
    x_adv: dict[float, torch.Tensor]
    class_names: tuple[str, ...]
    costs: list[AttackCost] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    def robust_accuracy(self, eps: float) -> float:
        return float(self.robust[eps].float().mean())

    @property
    def curve(self) -> list[tuple[float, float]]:
        """(eps, robust accuracy) including ``(0, clean accuracy)``."""
        points = [(0.0, self.clean_accuracy)]
        points += [(e, self.robust_accuracy(e)) for e in self.eps if e > 0]
        return points

    @property
    def gradient_evaluations(self) -> int:
        return sum(c.gradient_evaluations for c in self.costs)

    @property
    def queries(self) -> int:
        return sum(c.queries for c in self.costs)

    def metric_prefix(self) -> str:
        return f"evasion.{self.preset}.{self.norm}"

    def metrics(self) -> dict[str, float | int]:
        prefix = self.metric_prefix()
        out: dict[str, float | int] = {"evasion.clean_accuracy": round(self.clean_accuracy, 6)}
        for e in self.eps:
            out[f"{prefix}.robust_accuracy@{e:g}"] = round(self.robust_accuracy(e), 6)
        out[f"{prefix}.samples"] = len(self.y)
        out[f"{prefix}.gradient_evaluations"] = self.gradient_evaluations
        out[f"{prefix}.queries"] = self.queries
        out[f"{prefix}.seconds"] = round(self.seconds, 3)
        return out

    def per_class_rows(self) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for idx, name in enumerate(self.class_names):
            mask = self.y == idx
            count = int(mask.sum())
            if not count:
                continue
            row: list[Any] = [name, count, round(float(self.clean_correct[mask].float().mean()), 4)]
            row += [round(float(self.robust[e][mask].float().mean()), 4) for e in self.eps]
            rows.append(row)
        return rows

    def to_report(
        self,
        report: Report | None = None,
        *,
        min_robust_accuracy: float | None = None,
        check: str = "evasion",
    ) -> Report:
        """Write metrics, the robustness curve, per-class and cost tables and findings."""
        report = report if report is not None else Report(title="mlwarden robustness evaluation")
        report.metrics.update(self.metrics())
        prefix = self.metric_prefix()
        report.headline += [f"{prefix}.robust_accuracy@{e:g}" for e in self.eps]
        key = f"{self.preset}-{self.norm}"
        xs, ys = zip(*self.curve, strict=True)
        report.figures.append(
            Figure(
                id=f"evasion-curve-{key}",
                title=f"Robust accuracy vs {self.norm} budget ({self.preset})",
                kind="line",
                x_label=f"eps ({self.norm})",
                y_label="robust accuracy",
                series=[Series(label=self.preset, x=list(xs), y=list(ys))],
                caption=(
                    f"{len(self.y)} samples; eps 0 is the clean accuracy; "
                    f"{self.gradient_evaluations} gradient evaluations, {self.queries} queries"
                ),
            )
        )
        report.tables.append(
            Table(
                id=f"evasion-per-class-{key}",
                title=f"Robust accuracy per class ({self.preset}, {self.norm})",
                columns=["class", "samples", "clean accuracy"]
                + [f"robust@{e:g}" for e in self.eps],
                rows=self.per_class_rows(),
            )
        )
        report.tables.append(
            Table(
                id=f"evasion-cost-{key}",
                title=f"Attack cost ({self.preset}, {self.norm})",
                columns=[
                    "attack",
                    "eps",
                    "attacked",
                    "fooled",
                    "gradient evaluations",
                    "queries",
                    "seconds",
                ],
                rows=[
                    [
                        c.attack,
                        c.eps,
                        c.attacked,
                        c.fooled,
                        c.gradient_evaluations,
                        c.queries,
                        round(c.seconds, 3),
                    ]
                    for c in self.costs
                ],
            )
        )
        report.add(*robustness_findings(self, min_robust_accuracy, check=check))
        return report


def robustness_findings(
    result: RobustnessResult, min_robust_accuracy: float | None, *, check: str = "evasion"
) -> list[Finding]:
    """HIGH below the required robust accuracy at the largest budget; MEDIUM when the
    model loses more than half of its clean accuracy there."""
    findings: list[Finding] = []
    eps = max(result.eps)
    robust = result.robust_accuracy(eps)
    clean = result.clean_accuracy
    evidence = {
        "preset": result.preset,
        "norm": result.norm,
        "eps": eps,
        "robust_accuracy": robust,
        "clean_accuracy": clean,
        "samples": len(result.y),
    }
    if min_robust_accuracy is not None and robust < min_robust_accuracy:
        findings.append(
            Finding(
                id="MLW-EVA-010",
                title="Robust accuracy below the required minimum",
                severity=Severity.HIGH,
                detail=(
                    f"under {result.preset} attacks within {result.norm} eps={eps:g} the model "
                    f"keeps {robust:.1%} accuracy (clean {clean:.1%}), below the required "
                    f"{min_robust_accuracy:.1%}. Consider adversarial training or input "
                    "validation and rate limiting at the gateway."
                ),
                check=check,
                evidence={**evidence, "min_robust_accuracy": min_robust_accuracy},
                atlas=ATLAS_EVASION,
                owasp=OWASP_EVASION,
            )
        )
    elif clean > 0 and robust < 0.5 * clean:
        findings.append(
            Finding(
                id="MLW-EVA-011",
                title="Model loses most of its accuracy under small perturbations",
                severity=Severity.MEDIUM,
                detail=(
                    f"robust accuracy {robust:.1%} at {result.norm} eps={eps:g} is less than "
                    f"half of the clean accuracy {clean:.1%}"
                ),
                check=check,
                evidence=evidence,
                atlas=ATLAS_EVASION,
                owasp=OWASP_EVASION,
            )
        )
    return findings


def _clean_predictions(model: Any, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if hasattr(model, "predict"):
        return model.predict(x, batch_size).to(x.device)
    return torch.cat(
        [model.labels(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    ).to(x.device)


def check_evaluation(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    preset: str,
    norm: str,
    attacks: dict[float, list[Attack]] | None,
) -> tuple[Any, str, list[float]]:
    """Everything an evaluation can be refused for, before any work: the preset against the
    model, the norm, the budgets, the data against the model's spec. Returns the preset
    (None with explicit ``attacks``), the norm and the sorted budgets."""
    chosen = require_preset(model, preset) if attacks is None else None
    norm = check_norm(norm)
    budgets = sorted({check_eps(e) for e in ([eps] if isinstance(eps, (int, float)) else eps)})
    if not budgets:
        raise ParameterError("eps must name at least one perturbation budget")
    if len(x) == 0:
        raise DataError("cannot evaluate robustness on an empty data set")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples but y has {len(y)}")
    model.spec.validate_batch(x, what="evaluation data")
    model.spec.validate_labels(y)
    return chosen, norm, budgets


def evaluate_robustness(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    *,
    preset: str = DEFAULT_PRESET,
    norm: str = "linf",
    steps: int | None = None,
    queries: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    attacks: dict[float, list[Attack]] | None = None,
    progress: ProgressCallback = null_progress,
) -> RobustnessResult:
    """Robust accuracy of ``model`` on ``(x, y)`` at every budget in ``eps``.

    ``attacks`` overrides the preset with explicit attacks per budget (for research
    or to plug in a custom attack). Samples misclassified on the clean input are not
    attacked; they count as non-robust at every budget. A preset the model cannot serve
    (a white-box preset on a score oracle) is refused before any work.
    """
    start = time.perf_counter()
    chosen_preset, norm, budgets = check_evaluation(model, x, y, eps, preset, norm, attacks)
    y = y.to(x.device)
    clean_correct = _clean_predictions(model, x, batch_size) == y
    standing = clean_correct.clone()
    x_adv_best = x.clone()
    result = RobustnessResult(
        preset=chosen_preset.name if chosen_preset is not None else "custom",
        norm=norm,
        eps=budgets,
        y=y,
        clean_correct=clean_correct,
        robust={},
        x_adv={},
        class_names=tuple(model.spec.class_names),
    )
    for i, e in enumerate(budgets):
        chosen: list[Attack] = []
        if e > 0 and chosen_preset is not None:
            chosen = chosen_preset.build(e, norm, steps=steps, queries=queries, seed=seed)
        elif e > 0 and attacks is not None:
            chosen = attacks.get(e, [])
        for attack in chosen:
            idx = standing.nonzero().flatten()
            if len(idx) == 0:
                break
            res = attack_in_batches(
                attack, model, x[idx], y[idx], batch_size=batch_size, progress=progress
            )
            fooled = res.success.to(x.device) & res.clean_correct.to(x.device)
            standing[idx[fooled]] = False
            x_adv_best[idx[fooled]] = res.x_adv.to(x.device)[fooled]
            result.costs.append(
                AttackCost(
                    attack.name,
                    e,
                    len(idx),
                    int(fooled.sum()),
                    res.gradient_evaluations,
                    res.queries,
                    res.elapsed_s,
                )
            )
        result.robust[e] = standing.clone()
        result.x_adv[e] = x_adv_best.clone()
        progress("robustness: budgets", i + 1, len(budgets))
    result.seconds = time.perf_counter() - start
    return result
