"""DeepFool: the minimal step to the nearest linearised decision boundary.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool
deep neural networks", CVPR 2016. At each step the classifier is linearised around the
current point; the closest boundary between the true class and one of the
``candidates`` most likely classes is ``|f_k| / ||w_k||_q`` away (``q`` the dual norm:
L2 for L2, L1 for Linf) and the step crosses it, with a small ``overshoot``.

A minimal-perturbation attack: each iteration costs one backward pass per candidate
class, and a sample stops at the step it is fooled. With ``eps`` set, the result is
projected into the ball and success means "fooled inside eps".
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
    is_success,
)
from mlwarden.attacks.evasion._minimal import apply_budget
from mlwarden.attacks.evasion._projection import check_eps, check_norm, clip_to_bounds
from mlwarden.core.progress import ProgressCallback


class DeepFool(Attack):
    """Untargeted DeepFool in the L2 or Linf geometry."""

    name = "deepfool"

    def __init__(
        self,
        norm: str = "l2",
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        eps: float | None = None,
    ) -> None:
        self.norm = check_norm(norm)
        self.steps = check_int("steps", steps)
        self.overshoot = check_eps(overshoot, name="overshoot")
        self.candidates = check_int("candidates", candidates, minimum=2)
        self.eps = None if eps is None else check_eps(eps)

    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        bounds = model.spec.bounds
        with evaluating(model):
            state = AttackState(model, x, y, targeted=False)
            k = min(self.candidates, model.spec.num_classes)
            # candidate classes fixed from the clean logits, true class first
            others = state.clean_logits.scatter(1, state.y.view(-1, 1), float("-inf"))
            classes = torch.cat([state.y.view(-1, 1), others.topk(k - 1, dim=1).indices], dim=1)
            idx = state.standing()
            xs, cls = state.x[idx], classes[idx]
            r_total = torch.zeros_like(xs)
            cur = xs.clone()
            for step in range(self.steps):
                if len(idx) == 0:
                    break
                cur = cur.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(cur)
                    check_finite_logits(logits, "during the DeepFool attack")
                    picked = logits.gather(1, cls)  # (n, k): true class first
                    grads = torch.stack(
                        [
                            torch.autograd.grad(picked[:, j].sum(), cur, retain_graph=j < k - 1)[0]
                            for j in range(k)
                        ],
                        dim=1,
                    )  # (n, k, ...)
                state.gradient_evaluations += len(idx) * k
                logits = logits.detach()
                done = is_success(logits, state.y[idx], False)
                if bool(done.any()):
                    state.x_adv[idx[done]] = cur.detach()[done]
                    state.success[idx[done]] = True
                    keep = ~done
                    idx, xs, cls, r_total = idx[keep], xs[keep], cls[keep], r_total[keep]
                    picked, grads = picked[keep], grads[keep]
                    if len(idx) == 0:
                        break
                picked = picked.detach()
                w = (grads[:, 1:] - grads[:, :1]).flatten(2)  # (n, k-1, d)
                f = (picked[:, 1:] - picked[:, :1]).abs()  # (n, k-1)
                dual = w.norm(p=2, dim=2) if self.norm == "l2" else w.abs().sum(dim=2)
                dist = f / (dual + 1e-8)
                best = dist.argmin(dim=1)
                rows = torch.arange(len(idx), device=xs.device)
                w_best, f_best, dual_best = w[rows, best], f[rows, best], dual[rows, best]
                if self.norm == "l2":
                    r = ((f_best + 1e-4) / (dual_best.pow(2) + 1e-8)).unsqueeze(1) * w_best
                else:
                    r = ((f_best + 1e-4) / (dual_best + 1e-8)).unsqueeze(1) * w_best.sign()
                r_total = r_total + r.view_as(xs)
                cur = clip_to_bounds(xs + (1 + self.overshoot) * r_total, bounds)
                progress(self.name, step + 1, self.steps)
            if len(idx):  # last point not evaluated yet
                with torch.inference_mode():
                    logits = model(cur.detach())
                done = is_success(logits, state.y[idx], False)
                state.x_adv[idx] = cur.detach()
                state.success[idx[done]] = True
            apply_budget(model, state, self.eps, self.norm)
            progress(self.name, self.steps, self.steps)
        return state.result()
