"""FGSM: the Fast Gradient Sign Method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015. One step of size ``eps`` along the sign of the loss gradient (Linf) or
along the normalised gradient (the L2 "fast gradient method"). Cheap, and a lower
bound on what an attacker achieves: a robust accuracy measured with FGSM alone
overstates robustness, use PGD or APGD for claims.
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion._gradients import (
    AttackState,
    ce_objective,
    evaluating,
    is_success,
    objective_and_grad,
)
from mlwarden.attacks.evasion._projection import (
    check_eps,
    check_norm,
    project_adversarial,
    steepest_direction,
)
from mlwarden.core.progress import ProgressCallback


class FGSM(Attack):
    """Single-step gradient attack inside an Lp-ball of radius ``eps``.

    ``targeted=True`` treats ``y`` as target labels and descends the cross-entropy
    towards them. Samples already fooled on the clean input cost nothing.
    """

    name = "fgsm"

    def __init__(self, eps: float, norm: str = "linf", targeted: bool = False) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.targeted = bool(targeted)

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        bounds = model.spec.bounds
        with evaluating(model):
            state = AttackState(model, x, y, self.targeted)
            idx = state.standing()
            if len(idx) and self.eps > 0:
                xs, ys = state.x[idx], state.y[idx]
                _, _, grad = objective_and_grad(model, xs, ys, ce_objective, self.targeted)
                state.gradient_evaluations += len(idx)
                x_new = project_adversarial(
                    xs + self.eps * steepest_direction(grad, self.norm),
                    xs,
                    self.eps,
                    self.norm,
                    bounds,
                )
                with torch.inference_mode():
                    logits = model(x_new)
                done = is_success(logits, ys, self.targeted)
                state.x_adv[idx] = x_new
                state.success[idx[done]] = True
            progress(self.name, 1, 1)
        return state.result()
