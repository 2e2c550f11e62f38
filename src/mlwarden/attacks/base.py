"""The attack contract shared by every evasion attack.

An attack is an object: typed, validated hyper-parameters in ``__init__``; calling
it on ``(model, x, y)`` returns an `AttackResult`. Samples that are already fooled
stop costing work, and the cost actually spent is reported (gradient evaluations
counted per sample, oracle queries counted per sample).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.core.contract import is_model, require
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress


@dataclass
class AttackResult:
    """Adversarial batch, per-sample success, and the cost spent to get it.

    ``success[i]`` is true when ``x_adv[i]`` is misclassified (untargeted) or
    classified as the target (targeted). ``clean_correct[i]`` says whether the model
    classified the *unperturbed* sample correctly, so robust accuracy is
    ``mean(clean_correct & ~success)`` for untargeted attacks.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    clean_correct: torch.Tensor
    gradient_evaluations: int = 0
    queries: int = 0
    elapsed_s: float = 0.0
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else 0.0

    @property
    def robust_accuracy(self) -> float:
        if not len(self.success):
            return 0.0
        return float((self.clean_correct & ~self.success).float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if len(self.clean_correct) else 0.0


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise a `ParameterError` naming ``name`` unless ``value`` is positive (or zero)."""
    if value != value or (value < 0 if allow_zero else value <= 0):  # NaN or out of range
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name} must be {bound}, got {value}")


class Attack(ABC):
    """Base of all evasion attacks; subclasses implement `_attack`."""

    name: str = "attack"

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as given to ``__init__`` (for reports)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: ProgressCallback = null_progress,
    ) -> AttackResult:
        if is_model(model):  # a text model is refused here with the contract's message
            require(model, (), by=f"attack '{self.name}'", hint="use mlwarden.attacks.text")
        spec = model.spec
        spec.validate_batch(x, what="attack input")
        spec.validate_labels(y)
        if len(x) != len(y):
            raise DataError(f"x has {len(x)} samples but y has {len(y)}")
        start = time.perf_counter()
        result = self._attack(model, x, y, progress)
        result.elapsed_s = time.perf_counter() - start
        result.attack = self.name
        result.params = self.params()
        return result

    @abstractmethod
    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> AttackResult:
        """Run the attack on validated inputs."""
