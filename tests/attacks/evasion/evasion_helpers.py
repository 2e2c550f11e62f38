"""Helpers shared by the white-box evasion tests (importable, unlike conftest)."""

from __future__ import annotations

import torch

from mlwarden.core import Classifier, InputSpec


def tiny_classifier(
    shape: tuple[int, ...],
    num_classes: int,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> Classifier:
    """An untrained linear+tanh model: any shape, any bounds, deterministic weights."""
    torch.manual_seed(seed)
    numel = 1
    for d in shape:
        numel *= d
    module = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(numel, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, num_classes),
    )
    spec = InputSpec.for_classes(shape, num_classes, bounds=bounds)
    return Classifier(module, spec, name="tiny")
