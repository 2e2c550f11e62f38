"""The plain supervised training loop, and a trainable copy of a classifier to run it on.

It lives in `mlwarden.core` (not in defences) because attacks train with it too
(Knockoff Nets' copy, LiRA's shadow models), as do defences (fine-tuning,
fine-pruning, unlearning) and evaluation: core is the layer all of them already
import, so none reaches into another's package.

Kept deliberately small: full-batch tensors in, a seeded shuffle, Adam, optional
frozen parameters (anything with ``requires_grad=False`` is skipped). Strategies
such as adversarial training pass a ``transform`` that perturbs each batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.contract import Capability, require
from mlwarden.core.errors import DataError, ModelLoadError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator

BatchTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpochHook = Callable[[int, float], bool]


@dataclass
class TrainingHistory:
    """Mean loss per epoch, for reports and tests."""

    loss: list[float] = field(default_factory=list)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    transform: BatchTransform | None = None,
    extra_loss: ExtraLoss | None = None,
    progress: ProgressCallback = null_progress,
    task: str = "training",
    on_epoch: EpochHook | None = None,
) -> TrainingHistory:
    """Train ``model`` in place on ``(x, y)`` with cross-entropy; returns the loss history.

    ``y`` holds class indices ``(N,)``, or soft targets ``(N, C)`` (probabilities, e.g.
    a teacher's or a victim's answers) for distillation.

    ``transform(model, xb, yb)`` may replace each batch (adversarial training);
    ``extra_loss(model, xb, yb, logits)`` is added to the loss (regularisers).
    ``on_epoch(epoch, mean_loss)`` runs after each epoch (0-based) and stops training
    early by returning True (schedules and monitors of adversarial training).
    """
    if epochs <= 0:
        raise ParameterError(f"epochs must be positive, got {epochs}")
    if batch_size <= 0:
        raise ParameterError(f"batch_size must be positive, got {batch_size}")
    if lr <= 0:
        raise ParameterError(f"lr must be positive, got {lr}")
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"need as many labels as samples (got {len(x)} and {len(y)})")
    soft = y.is_floating_point()
    if soft and (y.dim() != 2 or not bool(torch.isfinite(y).all())):
        raise DataError("soft targets must be a finite (N, C) tensor of probabilities")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ParameterError("the model has no trainable parameters")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = make_generator(seed)
    history = TrainingHistory()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            if transform is not None:
                xb = transform(model, xb, yb)
                model.train()
            logits = model(xb)
            if soft:
                loss = -(yb * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            else:
                loss = nn.functional.cross_entropy(logits, yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model, xb, yb, logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.loss.append(total / count)
        progress(task, epoch + 1, epochs)
        if on_epoch is not None:
            stop = on_epoch(epoch, history.loss[-1])
            model.train()
            if stop:
                break
    model.eval()
    return history


def trainable_copy(classifier: Any, name: str | None = None) -> Classifier:
    """A deep copy of ``classifier`` whose parameters all require gradients.

    A ``.pt2`` teacher loaded through `mlwarden.io.models.load_model` is an unflattened
    ``torch.export`` module: its parameters are ordinary `nn.Parameter`s and gradients
    flow, but its ``.train()``/``.eval()`` raise. The copy is wrapped in a `Classifier`,
    which owns mode handling, so training it never toggles modes on the graph itself.
    """
    require(
        classifier,
        (Capability.TRAINABLE,),
        by="fine-tuning",
        hint="export the teacher as .pt2 or weights",
    )
    try:
        module: nn.Module = copy.deepcopy(classifier.module)
    except Exception as exc:  # noqa: BLE001 - any failure means the graph cannot be copied
        raise ModelLoadError(f"cannot copy the teacher model for training: {exc}") from exc
    params = list(module.parameters())
    if not params:
        raise ModelLoadError("the teacher model has no parameters to fine-tune")
    for p in params:
        p.requires_grad_(True)
    return Classifier(
        module,
        classifier.spec,
        name=name or f"{classifier.name}-student",
        spec_assumptions=classifier.spec_assumptions,  # a student inherits what was assumed
    ).to(classifier.device)
