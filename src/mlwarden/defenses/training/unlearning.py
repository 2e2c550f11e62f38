"""Unlearning a reverse-engineered trigger by fine-tuning on correctly labelled triggered inputs.

Wang et al., "Neural Cleanse", IEEE S&P 2019, Sec. VI-C: fine-tune on clean data in
which ``trigger_fraction`` (20% in the paper) of the samples carry the
reverse-engineered trigger but keep their *true* label, so the model learns to ignore
the trigger. Works with any trigger that has `apply` (patch, blend, additive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.attacks.poisoning.triggers import Trigger
from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.core.training import fit, trainable_copy


@dataclass
class UnlearningResult:
    classifier: Classifier
    history: list[float] = field(default_factory=list)


class Unlearning:
    """Fine-tune a copy of the model with ``trigger_fraction`` of each batch triggered, labels
    kept."""

    def __init__(
        self,
        trigger: Trigger,
        *,
        trigger_fraction: float = 0.2,
        epochs: int = 5,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.trigger = trigger
        self.trigger_fraction = trigger_fraction
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "trigger"}

    def apply(
        self,
        classifier: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: ProgressCallback = null_progress,
    ) -> UnlearningResult:
        """Return an unlearned copy of ``classifier``; the input model is untouched."""
        if not 0.0 < self.trigger_fraction < 1.0:
            raise ParameterError(f"trigger_fraction must be in (0, 1), got {self.trigger_fraction}")
        classifier.spec.validate_batch(x, what="clean data")
        classifier.spec.validate_labels(y, what="clean labels")
        student = trainable_copy(classifier, name=f"{classifier.name}-unlearned")
        bounds = classifier.spec.bounds
        gen = make_generator(self.seed + 1)

        def stamp(_model: nn.Module, xb: torch.Tensor, _yb: torch.Tensor) -> torch.Tensor:
            chosen = torch.rand(len(xb), generator=gen) < self.trigger_fraction
            if not bool(chosen.any()):
                return xb
            out = xb.clone()
            out[chosen.to(xb.device)] = self.trigger.apply(xb[chosen.to(xb.device)], bounds)
            return out

        history = fit(
            student,
            x,
            y,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            transform=stamp,
            progress=progress,
            task="unlearning",
        ).loss
        student.eval()
        return UnlearningResult(student, history)
