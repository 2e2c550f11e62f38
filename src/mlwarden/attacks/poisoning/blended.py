"""Blended injection: a full-image pattern mixed in with a small weight, hard to see.

Chen, Liu, Li, Lu and Song, "Targeted Backdoor Attacks on Deep Learning Systems Using
Data Poisoning", 2017 (the "blended injection strategy").
"""

from __future__ import annotations

import torch

from mlwarden.attacks.poisoning.base import DirtyLabelAttack
from mlwarden.attacks.poisoning.triggers import BlendPattern, BlendTrigger


class Blended(DirtyLabelAttack):
    """``x' = (1 - alpha) x + alpha * pattern`` on ``rate`` of the data, relabelled ``target``."""

    name = "blended"

    def __init__(
        self,
        target: int,
        rate: float = 0.1,
        *,
        alpha: float = 0.2,
        pattern: BlendPattern | torch.Tensor = "noise",
        seed: int = 0,
    ) -> None:
        super().__init__(BlendTrigger(alpha=alpha, pattern=pattern, seed=seed), target, rate, seed)
