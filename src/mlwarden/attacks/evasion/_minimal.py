"""Shared ending of the minimal-perturbation attacks (CW, DeepFool): an optional budget.

Minimal-perturbation attacks find the *smallest* adversarial example and have no eps.
To report robust accuracy at a budget, their result is projected into the eps-ball
and success is re-judged by the model, so a success always means "fooled inside eps".
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.evasion._gradients import AttackState, is_success
from mlwarden.attacks.evasion._projection import project_adversarial


def apply_budget(model: Any, state: AttackState, eps: float | None, norm: str) -> None:
    """Project ``state.x_adv`` into the ``eps``-ball and re-judge success (in place)."""
    if eps is None:
        return
    x_adv = project_adversarial(state.x_adv, state.x, eps, norm, model.spec.bounds)
    with torch.inference_mode():
        logits = model(x_adv)
    state.x_adv = x_adv
    state.success = is_success(logits, state.y, state.targeted)
