"""Labelled text as the audit checks, ``mlwarden privacy`` and ``mlwarden attack extraction``
use it: read against a text model's class names, its inputs and labels taken like a `Dataset`'s.

A `TextDataset` holds strings and a label tensor (``take`` and ``split`` as `Dataset`'s); the
checks that run on both kinds of model (accuracy, privacy, extraction) ask these helpers for
their inputs and labels, so the one branch on the kind of data lives here, not in each check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from mlwarden.core.errors import DataError

if TYPE_CHECKING:
    from mlwarden.io.dataset import Dataset
    from mlwarden.io.text_data import TextDataset


def labelled_text(
    source: str, model: Any, *, text_column: str = "text", label_column: str = "label"
) -> TextDataset:
    """Texts and labels of ``source`` (.jsonl, .csv, .tsv or a saved ``datasets`` folder),
    labels among ``model``'s class names; a `DataError` for unlabelled or empty data."""
    from mlwarden.io.text_data import load_text_data

    class_names = getattr(model.spec, "class_names", None)
    data = load_text_data(
        source, text_column=text_column, label_column=label_column, class_names=class_names
    )
    if len(data) == 0:
        raise DataError(f"text data '{source}' is empty")
    return data


def inputs_of(data: Dataset | TextDataset) -> torch.Tensor | list[str]:
    """The model inputs of ``data``: a tensor, or the list of texts."""
    texts = getattr(data, "texts", None)
    return list(texts) if texts is not None else data.x  # type: ignore[union-attr]


def labels_of(data: Dataset | TextDataset) -> torch.Tensor:
    """The integer labels of ``data``; a `DataError` for unlabelled text."""
    labels = data.labels if hasattr(data, "texts") else data.y  # type: ignore[union-attr]
    if labels is None:
        raise DataError(f"{getattr(data, 'name', 'data')}: this check needs labelled text")
    return labels


def concat(inputs: Sequence[torch.Tensor | list[str]]) -> torch.Tensor | list[str]:
    """Inputs of several data sets end to end (tensors concatenated, text lists joined)."""
    if all(isinstance(x, torch.Tensor) for x in inputs):
        return torch.cat(list(inputs))  # type: ignore[arg-type]
    return [t for x in inputs for t in x]  # type: ignore[union-attr]
