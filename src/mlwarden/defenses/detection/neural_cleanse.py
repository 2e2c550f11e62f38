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

import time
from typing import Any

import torch

from mlwarden.attacks.poisoning.triggers import image_axes
from mlwarden.core.errors import ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.detection._reverse import (
    TriggerFamily,
    reverse_engineer,
    validate_clean_set,
)
from mlwarden.defenses.detection.anomaly import anomaly_index
from mlwarden.defenses.detection.result import BackdoorScan


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


class NeuralCleanse:
    """Model-level backdoor detector for patch triggers (BadNets and the like).

    Hyper-parameters follow the paper's reference settings scaled to small inputs:
    ``init_cost`` is the initial weight of the mask L1 penalty, ``asr_threshold`` the
    success rate a trigger must reach, ``patience`` the number of cost-adjustment
    windows before the cost moves. ``threshold`` is the anomaly-index cut (2 in the
    paper).
    """

    name = "neural_cleanse"

    def __init__(
        self,
        *,
        steps: int = 300,
        batch_size: int = 64,
        lr: float = 0.1,
        init_cost: float = 1e-3,
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
        """Reverse-engineer a trigger for every class of ``classifier`` from clean ``(x, y)``."""
        if self.threshold <= 0:
            raise ParameterError(f"threshold must be positive, got {self.threshold}")
        validate_clean_set(classifier, x, y)
        start = time.perf_counter()
        spec = classifier.spec
        k = spec.num_classes
        gen = make_gen(self.seed)
        family = PatchTriggers(k, spec.shape, spec.bounds, gen).to(classifier.device)
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
            task="neural cleanse",
        )
        mask = res.tensors["mask"]  # (K, 1, H, W)
        pattern = res.tensors["pattern"]  # (K, C, H, W)
        low, high = spec.bounds
        trigger = low + mask * (pattern - low)  # what the stamp looks like on a blank input
        images = {
            "mask": (mask[:, 0], 0.0, 1.0),
            "trigger": (_channels_last(trigger), low, high),
        }
        triggers = {
            "mask": mask.reshape(k, *_mask_shape(spec.shape)),
            "pattern": pattern.reshape(k, *spec.shape),
        }
        return BackdoorScan(
            method=self.name,
            classes=classes.tolist(),
            sizes=res.sizes,
            success=res.success,
            anomaly_index=anomaly_index(res.sizes),
            threshold=self.threshold,
            images=images,
            triggers=triggers,
            elapsed_s=time.perf_counter() - start,
            size_name="mask L1 norm",
        )


def make_gen(seed: int) -> torch.Generator:
    from mlwarden.core.seeding import make_generator

    return make_generator(seed)


def _mask_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Mask shape that broadcasts over the input's channels."""
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    return shape


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """(K, C, H, W) -> (K, H, W) for grey, (K, H, W, C) for colour images."""
    if t.shape[1] == 1:
        return t[:, 0]
    return t.permute(0, 2, 3, 1)
