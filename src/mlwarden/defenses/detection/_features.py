"""Penultimate-layer representations of a training set, per class, for data-level detectors."""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.core.errors import DataError


def class_representations(
    classifier: Any, x: torch.Tensor, y: torch.Tensor, layer: str | None, batch_size: int
) -> tuple[torch.Tensor, str]:
    """Flattened activations of ``layer`` (default: the feature layer feeding the head)."""
    spec = classifier.spec
    spec.validate_batch(x, what="training data")
    spec.validate_labels(y, what="training labels")
    if len(x) != len(y):
        raise DataError(f"training data has {len(x)} samples but {len(y)} labels")
    if len(torch.unique(y)) < 2:
        raise DataError("the data set holds a single class; data-level detection needs at least 2")
    name = layer or classifier.penultimate_layer()
    feats = classifier.features(x, name, batch_size=batch_size).float().cpu()
    return feats, name
