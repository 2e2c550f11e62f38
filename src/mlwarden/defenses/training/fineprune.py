"""Fine-pruning: prune the channels clean data leaves dormant, then fine-tune.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on
Deep Neural Networks", RAID 2018. A backdoor tends to live in neurons that clean
inputs barely activate. Channels of the last convolution are pruned in increasing
order of their mean activation on clean data until ``prune_ratio`` is reached or
clean accuracy would drop by more than ``max_accuracy_drop``; fine-tuning on clean
data then repairs accuracy and disturbs what is left of the backdoor.

Pruning uses `torch.nn.utils.prune` (masks stay zero during fine-tuning, then are
made permanent), rather than a hand-rolled mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.layers import conv_layers, own_weight
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.training import fit, trainable_copy


@dataclass
class FinePruneResult:
    """The repaired model and what was done to it."""

    classifier: Classifier
    layer: str
    pruned_channels: list[int]
    total_channels: int
    accuracy_before: float
    accuracy_after_prune: float
    accuracy_after_finetune: float
    history: list[float] = field(default_factory=list)

    @property
    def prune_fraction(self) -> float:
        return len(self.pruned_channels) / self.total_channels


def last_conv_layer(module: nn.Module) -> str:
    """Name of the last convolution of ``module``; a clear error when there is none."""
    convs = conv_layers(module)
    if not convs:
        raise InputError(
            "the model has no convolution layer to fine-prune; name a linear layer to prune "
            "with layer='...' (e.g. the hidden layer before the head)"
        )
    return convs[-1]


def channel_activity(
    classifier: Classifier, layer: str, x: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Mean ReLU'd activation of each output channel (conv) or unit (linear) of ``layer`` on
    ``x``."""
    acts = classifier.features(x, layer, batch_size=batch_size, flatten=False).clamp_min(0)
    dims = [0] + list(range(2, acts.dim()))
    return acts.mean(dim=dims).cpu()


class FinePruning:
    """Prune dormant channels of ``layer`` (default: last conv), then fine-tune on clean data."""

    def __init__(
        self,
        *,
        layer: str | None = None,
        prune_ratio: float = 0.8,
        max_accuracy_drop: float = 0.25,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.layer = layer
        self.prune_ratio = prune_ratio
        self.max_accuracy_drop = max_accuracy_drop
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return dict(vars(self))

    def apply(
        self,
        classifier: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        progress: ProgressCallback = null_progress,
    ) -> FinePruneResult:
        """Return a pruned and fine-tuned copy of ``classifier`` (the input model is untouched).

        ``(x, y)`` is the clean data for activations and fine-tuning; accuracy limits are
        checked on ``(x_val, y_val)`` (default: ``(x, y)``).
        """
        if not 0.0 < self.prune_ratio < 1.0:
            raise ParameterError(f"prune_ratio must be in (0, 1), got {self.prune_ratio}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ParameterError(
                f"max_accuracy_drop must be in [0, 1], got {self.max_accuracy_drop}"
            )
        if self.epochs < 0:
            raise ParameterError(f"epochs must be >= 0, got {self.epochs}")
        classifier.spec.validate_batch(x, what="clean data")
        classifier.spec.validate_labels(y, what="clean labels")
        if len(torch.unique(y)) < 2:
            raise DataError("fine-pruning needs clean data of at least 2 classes")
        x_val = x if x_val is None else x_val
        y_val = y if y_val is None else y_val
        student = trainable_copy(classifier, name=f"{classifier.name}-fineprune")
        layer_name = self.layer or last_conv_layer(student.module)
        try:
            layer = student.module.get_submodule(layer_name)
        except AttributeError as exc:
            raise InputError(f"layer '{layer_name}' does not exist in the model") from exc
        if own_weight(layer) is None or own_weight(layer).dim() < 2:
            raise InputError(
                f"layer '{layer_name}' is a {type(layer).__name__} without a weight matrix; "
                "fine-pruning needs a conv or linear layer"
            )
        activity = channel_activity(student, layer_name, x)
        order = torch.argsort(activity)  # most dormant first
        total = len(order)
        before = student.accuracy(x_val, y_val)
        keep = torch.ones(total)

        def gate(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (out.dim() - 2)
            return out * keep.to(out.device).view(shape)

        handle = layer.register_forward_hook(gate)
        pruned: list[int] = []
        try:
            for count, ch in enumerate(order.tolist()):
                if (count + 1) / total > self.prune_ratio:
                    break
                keep[ch] = 0.0
                if before - student.accuracy(x_val, y_val) > self.max_accuracy_drop:
                    keep[ch] = 1.0
                    break
                pruned.append(ch)
                progress("fine-pruning: prune", count + 1, int(self.prune_ratio * total))
        finally:
            handle.remove()
        channel_mask = torch.ones(total)
        channel_mask[pruned] = 0.0
        weight_mask = channel_mask.view((-1,) + (1,) * (layer.weight.dim() - 1)).expand_as(
            layer.weight
        )
        prune.custom_from_mask(layer, "weight", weight_mask.to(layer.weight.device))
        if getattr(layer, "bias", None) is not None:
            prune.custom_from_mask(layer, "bias", channel_mask.to(layer.bias.device))
        after_prune = student.accuracy(x_val, y_val)
        history: list[float] = []
        if self.epochs > 0:
            history = fit(
                student,
                x,
                y,
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                seed=self.seed,
                progress=progress,
                task="fine-pruning: fine-tune",
            ).loss
        prune.remove(layer, "weight")
        if getattr(layer, "bias", None) is not None and hasattr(layer, "bias_orig"):
            prune.remove(layer, "bias")
        student.eval()
        return FinePruneResult(
            classifier=student,
            layer=layer_name,
            pruned_channels=sorted(pruned),
            total_channels=total,
            accuracy_before=before,
            accuracy_after_prune=after_prune,
            accuracy_after_finetune=student.accuracy(x_val, y_val),
            history=history,
        )
