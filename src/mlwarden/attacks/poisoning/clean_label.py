"""Label-consistent (clean-label) backdoor: only target-class samples are poisoned, labels
untouched.

Turner, Tsipras and Madry, "Label-Consistent Backdoor Attacks", 2019. Poisoned samples
keep their correct label, so a human audit of the labels finds nothing. To force the
model to rely on the trigger, each poisoned sample is first made hard to classify by
an adversarial perturbation computed on a surrogate model (the paper's PGD variant),
then the trigger is stamped on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mlwarden.attacks.poisoning.base import PoisonedDataset, PoisoningAttack
from mlwarden.attacks.poisoning.triggers import PatchTrigger, Trigger
from mlwarden.core.errors import ParameterError
from mlwarden.io.dataset import Dataset


class CleanLabel(PoisoningAttack):
    """Poison ``rate`` of the *target class* samples: perturb (``eps`` L-inf, on
    ``surrogate``), then trigger.

    ``rate`` here is the fraction of the target class that is poisoned, as in the paper.
    Without a ``surrogate`` (or with ``eps=0``) only the trigger is added.
    """

    name = "clean_label"

    def __init__(
        self,
        target: int,
        rate: float = 0.5,
        *,
        trigger: Trigger | None = None,
        surrogate: Any | None = None,
        eps: float = 0.3,
        steps: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(
            trigger or PatchTrigger(size=3, pattern="checkerboard"), target, rate, seed
        )
        self.surrogate = surrogate
        self.eps = eps
        self.steps = steps

    def params(self) -> dict[str, Any]:
        return {**super().params(), "eps": self.eps, "steps": self.steps}

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """Untargeted L-inf PGD without random start on the surrogate (kept here, ten lines,
        so that poisoning does not depend on the evasion package's evolving API)."""
        model = self.surrogate
        assert model is not None
        alpha = 2.5 * self.eps / self.steps
        x_adv = x.clone()
        was_training = model.training
        model.eval()
        try:
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                loss = nn.functional.cross_entropy(model(x_adv), y)
                (grad,) = torch.autograd.grad(loss, x_adv)
                with torch.no_grad():
                    x_adv = x_adv + alpha * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps)
                    x_adv = x_adv.clamp(bounds[0], bounds[1])
        finally:
            model.train(was_training)
        return x_adv.detach()

    def _poison(self, data: Dataset, bounds: tuple[float, float]) -> PoisonedDataset:
        if self.eps < 0:
            raise ParameterError(f"eps must be >= 0, got {self.eps}")
        if self.steps <= 0:
            raise ParameterError(f"steps must be positive, got {self.steps}")
        candidates = torch.nonzero(data.y == self.target).flatten()
        if len(candidates) == 0:
            raise ParameterError(f"the data set has no sample of the target class {self.target}")
        count = max(1, int(round(self.rate * len(candidates))))
        index = self._choose(candidates, count)
        x = data.x.clone()
        chosen = x[index]
        if self.surrogate is not None and self.eps > 0:
            chosen = self._perturb(chosen, data.y[index], bounds)
        x[index] = self.trigger.apply(chosen, bounds)
        poisoned = Dataset(x, data.y.clone(), data.class_names, f"{data.name}+{self.name}")
        return PoisonedDataset(poisoned, index, self.trigger, self.target, self.name)
