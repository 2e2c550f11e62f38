"""PGD: Projected Gradient Descent (ascent on the loss) with random restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. Iterate ``x <- P(x + alpha * d(grad))`` where ``d`` is
the steepest-ascent direction of the norm and ``P`` projects onto the eps-ball and the
input box, from a random start inside the ball.

Work is spent only where it matters: samples fooled on the clean input are never
attacked, a sample leaves the batch at the step it is fooled, and each restart attacks
only the samples still standing. For a sample that resists, the point with the highest
loss over all steps and restarts is returned (the worst case found).
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion._gradients import (
    OBJECTIVES,
    AttackState,
    check_int,
    check_loss,
    evaluating,
    objective_and_grad,
)
from mlwarden.attacks.evasion._projection import (
    check_eps,
    check_norm,
    project_adversarial,
    random_init,
    steepest_direction,
)
from mlwarden.core.progress import ProgressCallback
from mlwarden.core.seeding import make_generator


class PGD(Attack):
    """Projected gradient attack in the Linf or L2 ball of radius ``eps``.

    ``alpha`` defaults to ``2.5 * eps / steps`` (Madry et al.), enough to cross the ball
    and come back. ``loss`` is ``ce`` (cross-entropy), ``margin`` (Carlini-Wagner) or
    ``dlr`` (Croce & Hein). ``targeted=True`` treats ``y`` as target labels.
    """

    name = "pgd"

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        targeted: bool = False,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        self.eps = check_eps(eps)
        self.steps = check_int("steps", steps)
        self.alpha = (
            2.5 * self.eps / self.steps
            if alpha is None
            else check_eps(alpha, name="alpha", allow_zero=False)
        )
        self.norm = check_norm(norm)
        self.random_start = bool(random_start)
        self.restarts = check_int("restarts", restarts)
        self.targeted = bool(targeted)
        self.loss = check_loss(loss)
        self.seed = int(seed)

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        bounds = model.spec.bounds
        objective = OBJECTIVES[self.loss]
        generator = make_generator(self.seed)
        total = self.steps * self.restarts
        with evaluating(model):
            state = AttackState(model, x, y, self.targeted)
            if self.eps == 0:
                return state.result()
            for restart in range(self.restarts):
                idx = state.standing()
                if len(idx) == 0:
                    break
                xs, ys = state.x[idx], state.y[idx]
                cur = (
                    random_init(xs, self.eps, self.norm, bounds, generator)
                    if self.random_start
                    else xs.clone()
                )
                for step in range(self.steps):
                    logits, values, grad = objective_and_grad(
                        model, cur, ys, objective, self.targeted
                    )
                    state.gradient_evaluations += len(idx)
                    done = state.record(idx, cur, logits, values)
                    if bool(done.any()):
                        keep = ~done
                        idx, xs, ys, cur, grad = (
                            idx[keep],
                            xs[keep],
                            ys[keep],
                            cur[keep],
                            grad[keep],
                        )
                    progress(self.name, restart * self.steps + step + 1, total)
                    if len(idx) == 0:
                        break
                    cur = project_adversarial(
                        cur + self.alpha * steepest_direction(grad, self.norm),
                        xs,
                        self.eps,
                        self.norm,
                        bounds,
                    )
                if len(idx):  # the last step's point has not been evaluated yet
                    with torch.inference_mode():
                        logits = model(cur)
                        values = objective(logits, ys, self.targeted)
                    state.record(idx, cur, logits, values)
            progress(self.name, total, total)
        return state.result()
