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

from typing import TYPE_CHECKING

import torch

from mlwarden.defenses.detection._reverse import TriggerFamily, TriggerSearch, channels_last

if TYPE_CHECKING:
    from mlwarden.core.spec import InputSpec


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


class UniversalPerturbation(TriggerSearch):
    """Model-level detector for blended / additive triggers (calibrated cut, or a user
    anomaly-index ``threshold``)."""

    name = "universal_perturbation"
    title = "the universal-perturbation scan"
    task = "universal perturbation"
    size_name = "perturbation L2 norm"
    default_lr = 0.02
    default_init_cost = 1e-2

    def family(self, spec: InputSpec, generator: torch.Generator) -> TriggerFamily:
        return AdditiveTriggers(spec.num_classes, spec.shape, spec.bounds, generator)

    def visualise(
        self, tensors: dict[str, torch.Tensor], spec: InputSpec
    ) -> tuple[dict[str, tuple[torch.Tensor, float, float]], dict[str, torch.Tensor]]:
        delta = tensors["perturbation"]
        span = float(delta.abs().max()) or 1.0
        images: dict[str, tuple[torch.Tensor, float, float]] = {}
        if len(spec.shape) == 3:
            images["perturbation"] = (channels_last(delta), -span, span)
        elif len(spec.shape) == 2:
            images["perturbation"] = (delta, -span, span)
        return images, {"perturbation": delta}
