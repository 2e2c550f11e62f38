"""Fixtures for the white-box evasion tests: a digits batch to attack."""

from __future__ import annotations

import pytest
import torch

from mlwarden.io.dataset import Dataset


@pytest.fixture(scope="session")
def digits_batch(digits_split: tuple[Dataset, Dataset]) -> tuple[torch.Tensor, torch.Tensor]:
    """200 held-out digits (enough for stable robust accuracies, cheap to attack)."""
    _, test = digits_split
    return test.x[:200], test.y[:200]
