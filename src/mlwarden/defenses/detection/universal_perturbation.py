"""Minimum universal perturbation per class: a model-level detector for blended triggers.

Xiang, Miller and Kesidis, "Detection of Backdoors in Trained Classifiers Without
Access to the Training Set", IEEE TNNLS 2020 (and "Revealing Backdoors, Post-Training,
in DNN Classifiers via Novel Inference on Optimized Perturbations Inducing Group
Misclassification", ICASSP 2020). Neural Cleanse's mask penalty cannot see a trigger
that covers the whole image faintly (a blend with weight ``alpha`` needs a mask of
``alpha * H * W``, no smaller than a clean class's). An *additive* perturbation
``x + delta_k`` that sends clean inputs to class ``k`` is, however, far smaller for the
target of a blended or additive backdoor: the model has learnt a shortcut along the
blend pattern. The L2 norms of the smallest such perturbations are compared with the
same MAD anomaly index.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from mlwarden.core.errors import ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.defenses.detection._reverse import (
    TriggerFamily,
    reverse_engineer,
    validate_clean_set,
)
from mlwarden.defenses.detection.anomaly import anomaly_index
from mlwarden.defenses.detection.neural_cleanse import _channels_last
from mlwarden.defenses.detection.result import BackdoorScan


class AdditiveTriggers(TriggerFamily):
    """K additive perturbations ``delta_k`` over the whole input, clipped to the bounds."""

    def __init__(
        self, k: int, shape: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator
    ) -> None:
        super().__init__()
        self.shape = shape
        self.low, self.high = bounds
        scale = 0.01 * (self.high - self.low)
        self.delta = torch.nn.Parameter(scale * torch.randn((k, *shape), generator=gen))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x[None] + self.delta[:, None]).clamp(self.low, self.high)

    def size(self) -> torch.Tensor:
        return self.delta.flatten(1).norm(dim=1)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {"perturbation": self.delta.detach().clone()}


class UniversalPerturbation:
    """Model-level detector for blended / additive triggers (flag at anomaly index > ``threshold``)."""

    name = "universal_perturbation"

    def __init__(
        self,
        *,
        steps: int = 300,
        batch_size: int = 64,
        lr: float = 0.02,
        init_cost: float = 1e-2,
        asr_threshold: float = 0.95,
        patience: int = 2,
        threshold: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.init_cost = init_cost
        self.asr_threshold = asr_threshold
        self.patience = patience
        self.threshold = threshold
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return dict(vars(self))

    def scan(
        self,
        classifier: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: ProgressCallback = null_progress,
    ) -> BackdoorScan:
        """Find the smallest universal perturbation towards every class of ``classifier``."""
        if self.threshold <= 0:
            raise ParameterError(f"threshold must be positive, got {self.threshold}")
        validate_clean_set(classifier, x, y)
        start = time.perf_counter()
        spec = classifier.spec
        k = spec.num_classes
        family = AdditiveTriggers(k, spec.shape, spec.bounds, make_generator(self.seed))
        family = family.to(classifier.device)
        classes = torch.arange(k)
        res = reverse_engineer(
            classifier,
            family,
            classes,
            x,
            y,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            init_cost=self.init_cost,
            asr_threshold=self.asr_threshold,
            patience=self.patience,
            seed=self.seed,
            progress=progress,
            task="universal perturbation",
        )
        delta = res.tensors["perturbation"]
        span = float(delta.abs().max()) or 1.0
        images: dict[str, tuple[torch.Tensor, float, float]] = {}
        if len(spec.shape) == 3:
            images["perturbation"] = (_channels_last(delta), -span, span)
        elif len(spec.shape) == 2:
            images["perturbation"] = (delta, -span, span)
        return BackdoorScan(
            method=self.name,
            classes=classes.tolist(),
            sizes=res.sizes,
            success=res.success,
            anomaly_index=anomaly_index(res.sizes),
            threshold=self.threshold,
            images=images,
            triggers={"perturbation": delta},
            elapsed_s=time.perf_counter() - start,
            size_name="perturbation L2 norm",
        )
