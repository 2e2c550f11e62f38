"""Carlini-Wagner L2 attack.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
2017. Minimise ``||x' - x||_2^2 + c * f(x')`` over ``x' = box(tanh(w))`` (the change of
variables keeps ``x'`` inside the input bounds without clipping), where ``f`` is the
logit margin with confidence ``kappa``; a per-sample binary search over ``c`` finds the
smallest constant that still fools the model, and the closest adversarial example over
the whole search is returned.

It is a *minimal-perturbation* attack: work continues after a sample is fooled (to
shrink the perturbation), but samples misclassified on the clean input cost nothing.
With ``eps`` set, the result is projected into the L2 ball of radius ``eps`` and
success means "fooled inside eps".
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion._gradients import (
    AttackState,
    check_finite_logits,
    check_int,
    evaluating,
    margin_objective,
)
from mlwarden.attacks.evasion._minimal import apply_budget
from mlwarden.attacks.evasion._projection import check_eps
from mlwarden.core.progress import ProgressCallback

_BIG = 1e10


class CarliniWagnerL2(Attack):
    """CW-L2 with Adam (``lr``), ``steps`` per search step and ``binary_search_steps``."""

    name = "cw"
    norm = "l2"

    def __init__(
        self,
        confidence: float = 0.0,
        initial_const: float = 1.0,
        binary_search_steps: int = 5,
        steps: int = 100,
        lr: float = 0.05,
        eps: float | None = None,
        targeted: bool = False,
        abort_early: bool = True,
    ) -> None:
        self.confidence = check_eps(confidence, name="confidence")
        self.initial_const = check_eps(initial_const, name="initial_const", allow_zero=False)
        self.binary_search_steps = check_int("binary_search_steps", binary_search_steps)
        self.steps = check_int("steps", steps)
        self.lr = check_eps(lr, name="lr", allow_zero=False)
        self.eps = None if eps is None else check_eps(eps)
        self.targeted = bool(targeted)
        self.abort_early = bool(abort_early)

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        low, high = model.spec.bounds
        width = high - low
        total = self.binary_search_steps * self.steps
        with evaluating(model):
            state = AttackState(model, x, y, self.targeted)
            idx = state.standing()
            xs, ys = state.x[idx], state.y[idx]
            n = len(idx)
            if n == 0:
                return state.result()
            # tanh space; shrink by (1 - 1e-6) so that atanh stays finite at the bounds
            unit = ((xs - low) / width * 2 - 1).clamp(-1, 1) * (1 - 1e-6)
            w0 = torch.atanh(unit)
            const = torch.full((n,), self.initial_const, device=xs.device)
            lower = torch.zeros(n, device=xs.device)
            upper = torch.full((n,), _BIG, device=xs.device)
            best_l2 = torch.full((n,), float("inf"), device=xs.device)
            best_adv = xs.clone()
            done_steps = 0
            for _ in range(self.binary_search_steps):
                w = w0.clone().requires_grad_(True)
                optimizer = torch.optim.Adam([w], lr=self.lr)
                found = torch.zeros(n, dtype=torch.bool, device=xs.device)
                previous = float("inf")
                for step in range(self.steps):
                    with torch.enable_grad():
                        x_adv = (torch.tanh(w) + 1) / 2 * width + low
                        logits = model(x_adv)
                        check_finite_logits(logits, "during the CW attack")
                        l2 = (x_adv - xs).flatten(1).pow(2).sum(1)
                        # margin >= confidence means fooled with the required confidence
                        margin = margin_objective(logits, ys, self.targeted)
                        f = torch.clamp(self.confidence - margin, min=0.0)
                        loss = (l2 + const * f).sum()
                        (grad,) = torch.autograd.grad(loss, w)
                    state.gradient_evaluations += n
                    with torch.no_grad():
                        fooled = margin.detach() >= self.confidence
                        fooled &= margin.detach() > 0
                        closer = fooled & (l2.detach() < best_l2)
                        best_l2[closer] = l2.detach()[closer]
                        best_adv[closer] = x_adv.detach()[closer]
                        found |= fooled
                    w.grad = grad
                    optimizer.step()
                    done_steps += 1
                    progress(self.name, done_steps, total)
                    if self.abort_early and step % max(self.steps // 10, 1) == 0:
                        current = float(loss.detach())
                        if current > previous * 0.9999:
                            break
                        previous = current
                # binary search on c, per sample
                upper = torch.where(found, torch.minimum(upper, const), upper)
                lower = torch.where(found, lower, torch.maximum(lower, const))
                const = torch.where(upper < _BIG / 10, (lower + upper) / 2, const * 10)
            success = torch.isfinite(best_l2)
            state.x_adv[idx[success]] = best_adv[success]
            state.success[idx[success]] = True
            apply_budget(model, state, self.eps, "l2")
            progress(self.name, total, total)
        return state.result()
