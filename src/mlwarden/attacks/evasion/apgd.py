"""APGD: Auto-PGD with the CE or DLR loss, and its targeted version APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020 (the attacks behind AutoAttack). PGD with
momentum (``alpha = 0.75``) whose step size starts at ``2 * eps`` and is halved at
checkpoints ``w_j`` when the loss oscillates (it increased in fewer than
``rho = 75%`` of the steps since the last checkpoint) or when it neither improved nor
was reduced at the last checkpoint; after a halving the iterate restarts from the best
point found. Checkpoints follow the paper: the first after 22% of the steps, then
periods shrinking by 3% of the budget down to at least 6%.

Per-sample early exit: a sample leaves the batch at the step it is fooled, and
restarts (and target classes for APGD-T) attack only the samples still standing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion._gradients import (
    OBJECTIVES,
    AttackState,
    Objective,
    check_int,
    check_loss,
    dlr_objective,
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
from mlwarden.core.errors import ParameterError
from mlwarden.core.progress import ProgressCallback
from mlwarden.core.seeding import make_generator


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def apgd_run(
    model: Any,
    state: AttackState,
    idx: torch.Tensor,
    obj_labels: torch.Tensor,
    objective: Objective,
    obj_targeted: bool,
    *,
    eps: float,
    norm: str,
    bounds: tuple[float, float],
    steps: int,
    rho: float,
    generator: torch.Generator,
    on_step: Callable[[], None],
) -> None:
    """One APGD run (Algorithm 1 of Croce & Hein 2020) on the samples ``idx`` of ``state``.

    ``obj_labels`` are the labels the objective uses (true labels, or targets for
    APGD-T); success is judged by ``state`` (untargeted on the true labels, or
    targeted). Results are written into ``state``.
    """
    n_check = max(int(0.22 * steps), 1)
    n_check_min = max(int(0.06 * steps), 1)
    check_decrease = max(int(0.03 * steps), 1)

    xs = state.x[idx]
    cur = random_init(xs, eps, norm, bounds, generator)
    logits, values, grad = objective_and_grad(model, cur, obj_labels, objective, obj_targeted)
    state.gradient_evaluations += len(idx)
    done = state.record(idx, cur, logits, values)

    n = len(idx)
    dev = xs.device
    step_size = torch.full((n,), 2.0 * eps, device=dev)
    x_best, grad_best, loss_best = cur.clone(), grad.clone(), values.clone()
    prev_loss = values.clone()
    increases = torch.zeros(n, device=dev)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool, device=dev)
    x_old = cur.clone()
    since_check = 0

    def compact(keep: torch.Tensor) -> None:
        nonlocal idx, xs, obj_labels, cur, x_old, grad, x_best, grad_best, loss_best
        nonlocal prev_loss, increases, step_size, loss_best_last_check, reduced_last_check
        idx, xs, obj_labels, cur, x_old, grad = (
            idx[keep],
            xs[keep],
            obj_labels[keep],
            cur[keep],
            x_old[keep],
            grad[keep],
        )
        x_best, grad_best, loss_best = x_best[keep], grad_best[keep], loss_best[keep]
        prev_loss, increases, step_size = prev_loss[keep], increases[keep], step_size[keep]
        loss_best_last_check = loss_best_last_check[keep]
        reduced_last_check = reduced_last_check[keep]

    if bool(done.any()):
        compact(~done)
    for i in range(steps):
        on_step()
        if len(idx) == 0:
            continue
        momentum = 0.75 if i > 0 else 1.0
        previous = cur - x_old
        x_old = cur
        z = project_adversarial(
            cur + _per_sample(step_size, cur) * steepest_direction(grad, norm),
            xs,
            eps,
            norm,
            bounds,
        )
        cur = project_adversarial(
            cur + momentum * (z - cur) + (1.0 - momentum) * previous, xs, eps, norm, bounds
        )
        logits, values, grad = objective_and_grad(model, cur, obj_labels, objective, obj_targeted)
        state.gradient_evaluations += len(idx)
        done = state.record(idx, cur, logits, values)

        increases += (values > prev_loss).float()
        prev_loss = values
        improved = values > loss_best
        x_best[improved], grad_best[improved] = cur[improved], grad[improved]
        loss_best[improved] = values[improved]

        since_check += 1
        if since_check == n_check:
            oscillating = increases <= n_check * rho
            stalled = ~reduced_last_check & (loss_best_last_check >= loss_best)
            reduce = oscillating | stalled
            reduced_last_check = reduce
            loss_best_last_check = loss_best.clone()
            if bool(reduce.any()):
                step_size[reduce] /= 2.0
                cur[reduce] = x_best[reduce]
                grad[reduce] = grad_best[reduce]
            increases.zero_()
            since_check = 0
            n_check = max(n_check - check_decrease, n_check_min)
        if bool(done.any()):
            compact(~done)


def _check_rho(rho: float) -> float:
    if not 0.0 < float(rho) <= 1.0:
        raise ParameterError(f"rho must be in (0, 1], got {rho}")
    return float(rho)


class APGD(Attack):
    """Auto-PGD (APGD-CE with ``loss="ce"``, APGD-DLR with ``loss="dlr"``).

    Parameter-free apart from the budget: ``steps`` per restart (100 in AutoAttack),
    ``restarts`` on the samples still standing. ``targeted=True`` treats ``y`` as
    target labels.
    """

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        targeted: bool = False,
        rho: float = 0.75,
        seed: int = 0,
    ) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.restarts = check_int("restarts", restarts)
        self.loss = check_loss(loss)
        self.targeted = bool(targeted)
        self.rho = _check_rho(rho)
        self.seed = int(seed)

    @property  # type: ignore[override]
    def name(self) -> str:
        return f"apgd-{self.loss}"

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        generator = make_generator(self.seed)
        total = self.steps * self.restarts
        done_steps = 0

        def on_step() -> None:
            nonlocal done_steps
            done_steps += 1
            progress(self.name, done_steps, total)

        with evaluating(model):
            state = AttackState(model, x, y, self.targeted)
            if self.eps == 0:
                return state.result()
            for _ in range(self.restarts):
                idx = state.standing()
                if len(idx) == 0:
                    break
                apgd_run(
                    model,
                    state,
                    idx,
                    state.y[idx],
                    OBJECTIVES[self.loss],
                    self.targeted,
                    eps=self.eps,
                    norm=self.norm,
                    bounds=model.spec.bounds,
                    steps=self.steps,
                    rho=self.rho,
                    generator=generator,
                    on_step=on_step,
                )
            progress(self.name, total, total)
        return state.result()


class APGDTargeted(Attack):
    """APGD-T: APGD with the targeted DLR loss towards each of the top-``num_targets``
    classes in turn (by clean logit, most likely first), on the samples still standing.

    It is an *untargeted* attack (``y`` are the true labels): success means any
    misclassification. AutoAttack's standard version uses 9 targets and 100 steps.
    """

    name = "apgd-t"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        num_targets: int = 9,
        rho: float = 0.75,
        seed: int = 0,
    ) -> None:
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.restarts = check_int("restarts", restarts)
        self.num_targets = check_int("num_targets", num_targets)
        self.rho = _check_rho(rho)
        self.seed = int(seed)

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        generator = make_generator(self.seed)
        targets = min(self.num_targets, model.spec.num_classes - 1)
        total = self.steps * self.restarts * targets
        done_steps = 0

        def on_step() -> None:
            nonlocal done_steps
            done_steps += 1
            progress(self.name, done_steps, total)

        with evaluating(model):
            state = AttackState(model, x, y, targeted=False)
            if self.eps == 0:
                return state.result()
            ranking = state.clean_logits.argsort(dim=1, descending=True)
            for rank in range(1, targets + 1):
                for _ in range(self.restarts):
                    idx = state.standing()
                    if len(idx) == 0:
                        break
                    target = ranking[idx, rank]
                    apgd_run(
                        model,
                        state,
                        idx,
                        target,
                        dlr_objective,
                        True,
                        eps=self.eps,
                        norm=self.norm,
                        bounds=model.spec.bounds,
                        steps=self.steps,
                        rho=self.rho,
                        generator=generator,
                        on_step=on_step,
                    )
            progress(self.name, total, total)
        return state.result()
