"""Neural Cleanse: reverse-engineer the smallest patch trigger for every class.

Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019. For each class ``k`` a
mask ``m`` and pattern ``p`` are optimised so that ``(1 - m) * x + m * p`` is classified
``k``, with ``lambda * |m|_1`` keeping the mask small. A backdoor's target needs a
much smaller mask than the other classes: its L1 norm is an outlier under the
median-absolute-deviation anomaly index (flag above 2).

mask and pattern are parameterised through ``tanh`` as in the paper, so they stay in
[0, 1] and the input bounds without clipping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mlwarden.attacks.poisoning.triggers import image_axes
from mlwarden.defenses.detection._reverse import TriggerFamily, TriggerSearch, channels_last

if TYPE_CHECKING:
    from mlwarden.core.spec import InputSpec


class PatchTriggers(TriggerFamily):
    """K masks (shared across channels) and K patterns, in tanh space."""

    def __init__(
        self, k: int, shape: tuple[int, ...], bounds: tuple[float, float], gen: torch.Generator
    ) -> None:
        super().__init__()
        channels, height, width = image_axes(shape)
        self.shape = shape
        self.low, self.high = bounds
        # start from a small, random mask and a random pattern (as the reference code)
        self.mask_raw = torch.nn.Parameter(
            torch.atanh(
                torch.full((k, 1, height, width), -0.8)
                + 0.2 * torch.rand((k, 1, height, width), generator=gen)
            )
        )
        self.pattern_raw = torch.nn.Parameter(
            torch.atanh((torch.rand((k, channels, height, width), generator=gen) * 2 - 1) * 0.9)
        )

    def mask(self) -> torch.Tensor:
        return (torch.tanh(self.mask_raw) + 1) / 2

    def pattern(self) -> torch.Tensor:
        return self.low + (torch.tanh(self.pattern_raw) + 1) / 2 * (self.high - self.low)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        img = x.reshape(1, b, *image_axes(self.shape))
        m, p = self.mask()[:, None], self.pattern()[:, None]
        out = (1 - m) * img + m * p
        return out.reshape(len(m), b, *self.shape)

    def size(self) -> torch.Tensor:
        return self.mask().flatten(1).sum(1)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {"mask": self.mask().detach().clone(), "pattern": self.pattern().detach().clone()}


class NeuralCleanse(TriggerSearch):
    """Model-level backdoor detector for patch triggers (BadNets and the like).

    Hyper-parameters follow the paper's reference settings scaled to small inputs:
    ``init_cost`` is the initial weight of the mask L1 penalty, ``asr_threshold`` the
    success rate a trigger must reach, ``patience`` the number of cost-adjustment
    windows before the cost moves. ``threshold`` is an anomaly-index cut (2 in the
    paper); left ``None`` the calibrated cut of the size ratio decides (`calibration`).
    """

    name = "neural_cleanse"
    title = "Neural Cleanse"
    task = "neural cleanse"
    size_name = "mask L1 norm"
    default_lr = 0.1
    default_init_cost = 1e-3

    def family(self, spec: InputSpec, generator: torch.Generator) -> TriggerFamily:
        return PatchTriggers(spec.num_classes, spec.shape, spec.bounds, generator)

    def visualise(
        self, tensors: dict[str, torch.Tensor], spec: InputSpec
    ) -> tuple[dict[str, tuple[torch.Tensor, float, float]], dict[str, torch.Tensor]]:
        mask = tensors["mask"]  # (K, 1, H, W)
        pattern = tensors["pattern"]  # (K, C, H, W)
        k = len(mask)
        low, high = spec.bounds
        trigger = low + mask * (pattern - low)  # what the stamp looks like on a blank input
        images = {
            "mask": (mask[:, 0], 0.0, 1.0),
            "trigger": (channels_last(trigger), low, high),
        }
        triggers = {
            "mask": mask.reshape(k, *_mask_shape(spec.shape)),
            "pattern": pattern.reshape(k, *spec.shape),
        }
        return images, triggers


def _mask_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Mask shape that broadcasts over the input's channels."""
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    return shape
