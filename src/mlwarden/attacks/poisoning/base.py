"""What every poisoning attack shares: choosing samples at a rate and the result it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from mlwarden.attacks.poisoning.triggers import Trigger
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.seeding import make_generator
from mlwarden.io.dataset import Dataset


@dataclass(frozen=True)
class PoisonedDataset:
    """The poisoned training set and which samples were poisoned.

    ``poison_index`` indexes ``data``; ``is_poison`` is the same as a boolean mask,
    which data-level detectors are scored against.
    """

    data: Dataset
    poison_index: torch.Tensor
    trigger: Trigger
    target: int
    attack: str

    @property
    def is_poison(self) -> torch.Tensor:
        mask = torch.zeros(len(self.data), dtype=torch.bool)
        mask[self.poison_index] = True
        return mask

    @property
    def rate(self) -> float:
        return len(self.poison_index) / max(len(self.data), 1)


class PoisoningAttack(ABC):
    """Poison ``rate`` of a data set towards class ``target`` with a trigger.

    Hyper-parameters are stored as given and validated in `poison`, scikit-learn style.
    """

    name = "poisoning"

    def __init__(self, trigger: Trigger, target: int, rate: float = 0.1, seed: int = 0) -> None:
        self.trigger = trigger
        self.target = target
        self.rate = rate
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {
            "trigger": repr(self.trigger),
            "target": self.target,
            "rate": self.rate,
            "seed": self.seed,
        }

    def _validate(self, data: Dataset) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ParameterError(f"rate must be in (0, 1], got {self.rate}")
        if not 0 <= self.target < len(data.class_names):
            raise ParameterError(
                f"target must be a class index in [0, {len(data.class_names) - 1}], "
                f"got {self.target}"
            )
        if len(data) == 0:
            raise DataError(f"cannot poison the empty data set '{data.name}'")

    def _choose(self, candidates: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` of the ``candidates`` indices, drawn with this attack's seed."""
        if count > len(candidates):
            raise ParameterError(
                f"rate {self.rate} asks for {count} poisoned samples but only "
                f"{len(candidates)} are eligible"
            )
        order = torch.randperm(len(candidates), generator=make_generator(self.seed))
        return candidates[order[:count]].sort().values

    def poison(self, data: Dataset, bounds: tuple[float, float] = (0.0, 1.0)) -> PoisonedDataset:
        """A poisoned copy of ``data`` (the input is never modified)."""
        self._validate(data)
        return self._poison(data, bounds)

    @abstractmethod
    def _poison(self, data: Dataset, bounds: tuple[float, float]) -> PoisonedDataset:
        """Poison validated data."""


class DirtyLabelAttack(PoisoningAttack):
    """Stamp the trigger on ``rate * len(data)`` non-target samples and relabel them ``target``."""

    def _poison(self, data: Dataset, bounds: tuple[float, float]) -> PoisonedDataset:
        candidates = torch.nonzero(data.y != self.target).flatten()
        count = max(1, int(round(self.rate * len(data))))
        index = self._choose(candidates, count)
        x, y = data.x.clone(), data.y.clone()
        x[index] = self.trigger.apply(x[index], bounds)
        y[index] = self.target
        poisoned = Dataset(x, y, data.class_names, f"{data.name}+{self.name}")
        return PoisonedDataset(poisoned, index, self.trigger, self.target, self.name)
