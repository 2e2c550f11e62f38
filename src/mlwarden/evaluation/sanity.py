"""Sanity checks that tell whether a robustness evaluation can be trusted.

Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry & Kurakin,
"On Evaluating Adversarial Robustness", 2019, section 5 lists the symptoms of gradient
masking and of attacks that did not converge. A model that *looks* robust because its
gradients are useless (saturated softmax, non-differentiable preprocessing, random
layers) shows at least one of them:

* MLW-EVA-001: accuracy does not reach ~0 at a budget large enough to reach any input;
* MLW-EVA-002: accuracy does not fall as the budget grows (independent attacks per eps);
* MLW-EVA-003: more attack iterations *increase* robust accuracy;
* MLW-EVA-004: more iterations decrease it a lot: the evaluation has not converged;
* MLW-EVA-005: a black-box attack fools samples the white-box attack could not.

Each symptom becomes a MEDIUM finding saying that the reported robustness may be
unreliable and what to do about it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.attacks.evasion._gradients import attack_in_batches
from mlwarden.attacks.evasion._projection import check_eps, check_norm
from mlwarden.attacks.evasion.pgd import PGD
from mlwarden.attacks.evasion.square import SquareAttack
from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress

_ADVICE = (
    "The robust accuracy reported for this model may be an overestimate caused by "
    "gradient masking (Carlini et al. 2019); evaluate with the 'standard' preset, "
    "more steps and restarts, and a black-box attack before relying on it."
)


@dataclass
class SanityResult:
    """Measurements of the sanity checks and the findings they produced."""

    metrics: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    outcomes: list[tuple[str, bool, str]] = field(default_factory=list)
    """``(check, passed, reason)`` per sanity check: each ends in a stated pass or fail."""

    def judge(self, check: str, passed: bool, reason: str) -> None:
        self.outcomes.append((check, passed, reason))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.outcomes)

    def to_report(self, report: Report) -> Report:
        report.metrics.update({k: round(v, 6) for k, v in self.metrics.items()})
        report.metrics["evasion.sanity.passed"] = sum(ok for _, ok, _ in self.outcomes)
        report.metrics["evasion.sanity.failed"] = sum(not ok for _, ok, _ in self.outcomes)
        report.add(*self.findings)
        report.tables.append(
            Table(
                id="evasion.sanity",
                title="Gradient-masking sanity checks (Carlini et al. 2019)",
                columns=["check", "result", "reason"],
                rows=[[name, "pass" if ok else "fail", why] for name, ok, why in self.outcomes],
            )
        )
        return report


def _finding(fid: str, title: str, detail: str, evidence: dict[str, Any]) -> Finding:
    return Finding(
        id=fid,
        title=title,
        severity=Severity.MEDIUM,
        detail=f"{detail}. {_ADVICE}",
        check="evasion.sanity",
        evidence=evidence,
        atlas=["AML.T0015"],
        owasp=["ML01"],
    )


def unbounded_eps(spec: Any, norm: str) -> float:
    """A budget that can reach every point of the input box from any other point."""
    low, high = spec.bounds
    width = float(high - low)
    return width if norm == "linf" else width * math.sqrt(spec.numel)


def run_sanity_checks(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    steps: int = 20,
    seed: int = 0,
    samples: int = 200,
    tolerance: float = 0.03,
    blackbox_queries: int = 1000,
    batch_size: int = 512,
    progress: ProgressCallback = null_progress,
) -> SanityResult:
    """Run the gradient-masking checks with PGD and Square.

    Works on at most ``samples`` samples; ``tolerance`` is the accuracy difference
    (absolute) that counts as a symptom rather than noise.
    """
    norm = check_norm(norm)
    budgets = sorted({check_eps(e) for e in eps if e > 0})
    if not budgets:
        raise ParameterError("eps must contain at least one budget > 0 for the sanity checks")
    if not 0 <= tolerance < 1:
        raise ParameterError(f"tolerance must be in [0, 1), got {tolerance}")
    x, y = x[:samples], y[:samples]
    out = SanityResult()
    total = len(budgets) + 3

    def run(attack: Any) -> Any:
        return attack_in_batches(attack, model, x, y, batch_size=batch_size, progress=progress)

    # 1. Independent PGD per budget: accuracy must fall as eps grows.
    per_eps = []
    for i, e in enumerate(budgets):
        per_eps.append(run(PGD(e, steps=steps, norm=norm, seed=seed)))
        out.metrics[f"evasion.sanity.pgd_robust_accuracy@{e:g}"] = per_eps[-1].robust_accuracy
        progress("sanity checks", i + 1, total)
    rising = None
    for (e0, r0), (e1, r1) in zip(
        zip(budgets, per_eps, strict=True),
        zip(budgets[1:], per_eps[1:], strict=True),
        strict=False,
    ):
        if r1.robust_accuracy > r0.robust_accuracy + tolerance:
            rising = (e0, r0.robust_accuracy, e1, r1.robust_accuracy)
            out.findings.append(
                _finding(
                    "MLW-EVA-002",
                    "Robust accuracy does not fall as the perturbation budget grows",
                    f"PGD leaves {r1.robust_accuracy:.1%} accuracy at eps={e1:g} but "
                    f"{r0.robust_accuracy:.1%} at the smaller eps={e0:g}",
                    {"eps": [e0, e1], "robust_accuracy": [r0.robust_accuracy, r1.robust_accuracy]},
                )
            )
            break

    accs = ", ".join(
        f"{r.robust_accuracy:.1%}@{e:g}" for e, r in zip(budgets, per_eps, strict=True)
    )
    if rising is None:
        out.judge("accuracy falls as eps grows", True, f"PGD robust accuracy {accs}")
    else:
        out.judge(
            "accuracy falls as eps grows",
            False,
            f"{rising[3]:.1%} at eps={rising[2]:g} > {rising[1]:.1%} at eps={rising[0]:g}",
        )

    # 2. An unbounded budget must drive accuracy to ~0.
    big = unbounded_eps(model.spec, norm)
    unbounded = run(PGD(big, steps=steps, norm=norm, seed=seed))
    out.metrics["evasion.sanity.unbounded_robust_accuracy"] = unbounded.robust_accuracy
    progress("sanity checks", len(budgets) + 1, total)
    out.judge(
        "unbounded eps reaches ~0% accuracy",
        unbounded.robust_accuracy <= tolerance,
        f"PGD at eps={big:g} leaves {unbounded.robust_accuracy:.1%} (limit {tolerance:.0%})",
    )
    if unbounded.robust_accuracy > tolerance:
        out.findings.append(
            _finding(
                "MLW-EVA-001",
                "Accuracy does not reach zero under an unbounded perturbation",
                f"with eps={big:g} ({norm}), enough to reach any input, PGD leaves "
                f"{unbounded.robust_accuracy:.1%} accuracy; a working attack reaches ~0%",
                {"eps": big, "robust_accuracy": unbounded.robust_accuracy},
            )
        )

    # 3. More iterations must not help the model; many fewer must not hurt it much.
    e = budgets[-1]
    base = per_eps[-1]
    longer = run(PGD(e, steps=steps * 5, norm=norm, seed=seed))
    out.metrics[f"evasion.sanity.pgd{steps * 5}_robust_accuracy@{e:g}"] = longer.robust_accuracy
    progress("sanity checks", len(budgets) + 2, total)
    evidence = {
        "eps": e,
        "steps": [steps, steps * 5],
        "robust_accuracy": [base.robust_accuracy, longer.robust_accuracy],
    }
    more_helps = longer.robust_accuracy > base.robust_accuracy + tolerance
    unconverged = base.robust_accuracy > longer.robust_accuracy + tolerance
    out.judge(
        f"{steps * 5} steps agree with {steps}",
        not (more_helps or unconverged),
        f"{base.robust_accuracy:.1%} with {steps} steps, {longer.robust_accuracy:.1%} with "
        f"{steps * 5} at eps={e:g} (tolerance {tolerance:.0%})"
        + ("; more steps help the model" if more_helps else "")
        + ("; the attack had not converged" if unconverged else ""),
    )
    if more_helps:
        out.findings.append(
            _finding(
                "MLW-EVA-003",
                "More attack iterations increase robust accuracy",
                f"PGD with {steps * 5} steps leaves {longer.robust_accuracy:.1%} accuracy at "
                f"eps={e:g}, more than the {base.robust_accuracy:.1%} left by {steps} steps",
                evidence,
            )
        )
    elif unconverged:
        out.findings.append(
            _finding(
                "MLW-EVA-004",
                "The attack had not converged",
                f"PGD with {steps * 5} steps lowers robust accuracy at eps={e:g} from "
                f"{base.robust_accuracy:.1%} ({steps} steps) to {longer.robust_accuracy:.1%}; "
                "raise --steps until the figure stops moving",
                evidence,
            )
        )

    # 4. A black-box attack must not beat the white-box one.
    square = run(SquareAttack(e, norm=norm, queries=blackbox_queries, seed=seed))
    white = longer.success | base.success
    black_only = (square.success & square.clean_correct & ~white).float().mean()
    out.metrics[f"evasion.sanity.square_robust_accuracy@{e:g}"] = square.robust_accuracy
    out.metrics["evasion.sanity.blackbox_only_fooled"] = float(black_only)
    out.judge(
        "black-box does not beat white-box",
        float(black_only) <= tolerance,
        f"Square fools {float(black_only):.1%} of the samples PGD could not at eps={e:g} "
        f"(limit {tolerance:.0%})",
    )
    if float(black_only) > tolerance:
        out.findings.append(
            _finding(
                "MLW-EVA-005",
                "A black-box attack beats the white-box attack",
                f"Square fools {float(black_only):.1%} of the samples that PGD could not at "
                f"eps={e:g}; gradients are not pointing where the model is weak",
                {
                    "eps": e,
                    "blackbox_only_fooled": float(black_only),
                    "square_robust_accuracy": square.robust_accuracy,
                    "pgd_robust_accuracy": longer.robust_accuracy,
                },
            )
        )
    progress("sanity checks", total, total)
    return out
