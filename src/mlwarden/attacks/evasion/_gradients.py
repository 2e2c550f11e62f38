"""Losses, gradients and bookkeeping shared by the white-box evasion attacks.

Every loss here is an *objective to maximise*, per sample, so that attacks only ever
ascend: untargeted attacks push the true class down, targeted ones push the target
class up. Losses follow the papers that introduced them:

* ``ce``     cross-entropy (Goodfellow et al. 2015; Madry et al. 2018);
* ``margin`` the logit margin of Carlini & Wagner 2017 (``f_6``);
* ``dlr``    the Difference of Logits Ratio of Croce & Hein 2020, invariant to the
             scale of the logits, which defeats a whole family of gradient masking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.core.errors import InputError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress

LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")

Objective = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def check_loss(loss: str) -> str:
    value = str(loss).strip().lower()
    if value not in LOSSES:
        raise ParameterError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return value


def _other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``y``."""
    masked = logits.scatter(1, y.view(-1, 1), float("-inf"))
    return masked.amax(dim=1)


def ce_objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    ce = F.cross_entropy(logits, y, reduction="none")
    return -ce if targeted else ce


def margin_objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    other = _other_max(logits, y)
    return z_y - other if targeted else other - z_y


def dlr_objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """DLR (untargeted) and targeted DLR of Croce & Hein 2020, eq. (6) and (7).

    Untargeted: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``; targeted with target
    ``t``: ``-(z_y' - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)``. For targeted use, ``y``
    holds the *targets*; the true class is not needed because the numerator
    ``z_t - max_{j != t} z_j`` plays its role here (equal to the paper's where the
    true class is the top one, which is the case while the attack has not succeeded).
    With fewer classes than the denominator needs, it falls back to the margin.
    """
    num_classes = logits.shape[1]
    if num_classes < (4 if targeted else 3):
        return margin_objective(logits, y, targeted)
    top = logits.sort(dim=1, descending=True).values
    if targeted:
        denom = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
    else:
        denom = top[:, 0] - top[:, 2] + 1e-12
    return margin_objective(logits, y, targeted) / denom


OBJECTIVES: dict[str, Objective] = {
    "ce": ce_objective,
    "margin": margin_objective,
    "dlr": dlr_objective,
}


def is_success(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Untargeted: prediction differs from ``y``; targeted: prediction equals ``y``."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def check_finite_logits(logits: torch.Tensor, where: str) -> None:
    """Raise a clear error instead of silently attacking with NaN gradients."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise InputError(
            f"the model returned NaN or infinite logits for {bad} sample(s) {where}; "
            "an attack cannot be trusted on such a model (check it for numerical "
            "instability, e.g. log(0) or division by zero, or inputs outside its domain)"
        )


def objective_and_grad(
    model: Any, x: torch.Tensor, y: torch.Tensor, objective: Objective, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, per-sample objective and its gradient w.r.t. ``x`` (all detached).

    ``torch.autograd.grad`` only differentiates towards ``x``: no parameter gradients
    are accumulated in the user's model.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        check_finite_logits(logits, "during the attack")
        values = objective(logits, y, targeted)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return logits.detach(), values.detach(), grad.detach()


def clean_logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits on the unperturbed batch (no gradient), validated."""
    with torch.inference_mode():
        logits = model(x)
    check_finite_logits(logits, "on the clean inputs")
    return logits


def model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def attack_in_batches(
    attack: Attack,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 512,
    progress: ProgressCallback = null_progress,
) -> AttackResult:
    """Run ``attack`` on ``x`` in chunks of ``batch_size`` and merge the results.

    Keeps memory bounded for large evaluation sets; results are identical to one call
    per chunk with the attack's seed (each chunk restarts the attack's generator).
    """
    if batch_size <= 0:
        raise ParameterError(f"batch_size must be positive, got {batch_size}")
    parts: list[AttackResult] = []
    total = len(x)
    task = f"{attack.name}: samples"
    progress(task, 0, total)
    for start in range(0, total, batch_size):
        chunk = slice(start, start + batch_size)
        parts.append(attack(model, x[chunk], y[chunk], progress=progress))
        progress(task, min(start + batch_size, total), total)
    if not parts:
        return attack(model, x, y)
    merged = AttackResult(
        x_adv=torch.cat([p.x_adv for p in parts]),
        success=torch.cat([p.success for p in parts]),
        clean_correct=torch.cat([p.clean_correct for p in parts]),
        gradient_evaluations=sum(p.gradient_evaluations for p in parts),
        queries=sum(p.queries for p in parts),
        elapsed_s=sum(p.elapsed_s for p in parts),
        attack=parts[0].attack,
        params=parts[0].params,
    )
    return merged


def check_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer hyper-parameter (steps, restarts, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def evaluating(model: Any) -> Any:
    """The model's own eval-mode context (a `Classifier` owns mode handling)."""
    from contextlib import nullcontext

    ctx = getattr(model, "evaluating", None)
    return ctx() if callable(ctx) else nullcontext()


class AttackState:
    """Per-sample bookkeeping of one attack call: the best point so far and success.

    ``x_adv[i]`` is the first successful point of sample ``i`` or, while it still
    stands, the point with the highest objective seen (the worst case for the model).
    """

    def __init__(self, model: Any, x: torch.Tensor, y: torch.Tensor, targeted: bool) -> None:
        self.device = model_device(model)
        self.input_device = x.device
        self.x = x.detach().to(self.device, dtype=torch.float32)
        self.y = y.detach().to(self.device)
        self.targeted = targeted
        logits = clean_logits(model, self.x)
        self.clean_logits = logits
        pred = logits.argmax(dim=1)
        self.success = is_success(logits, self.y, targeted)
        # targeted: "correct" means the clean sample is not already the target class
        self.clean_correct = pred != self.y if targeted else pred == self.y
        self.x_adv = self.x.clone()
        self.best = torch.full((len(x),), float("-inf"), device=self.device)
        self.gradient_evaluations = 0

    def standing(self) -> torch.Tensor:
        """Indices of the samples not fooled yet."""
        return (~self.success).nonzero().flatten()

    def record(
        self, idx: torch.Tensor, x_cur: torch.Tensor, logits: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Store successes and improvements of the samples ``idx``; return their success mask."""
        done = is_success(logits, self.y[idx], self.targeted)
        better = (values > self.best[idx]) & ~done
        take = done | better
        if bool(take.any()):
            self.x_adv[idx[take]] = x_cur[take]
            self.best[idx[better]] = values[better]
            self.success[idx[done]] = True
        return done

    def result(self) -> AttackResult:
        dev = self.input_device
        return AttackResult(
            x_adv=self.x_adv.to(dev),
            success=self.success.to(dev),
            clean_correct=self.clean_correct.to(dev),
            gradient_evaluations=self.gradient_evaluations,
        )
