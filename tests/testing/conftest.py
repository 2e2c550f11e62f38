"""Fixtures for the testing-plugin tests: a real .pt2 model and .npz data on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlwarden.core import Classifier
from mlwarden.io.dataset import Dataset

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def audit_files(
    tmp_path_factory: pytest.TempPathFactory,
    digits_cnn: Classifier,
    digits_split: tuple[Dataset, Dataset],
) -> tuple[Path, Path]:
    """(model.pt2, test.npz): ``digits_cnn`` exported with torch.export and 120 test samples."""
    from mlwarden.io import save_pt2

    folder = tmp_path_factory.mktemp("mlwarden-ci")
    model = save_pt2(digits_cnn, folder / "model.pt2")
    _, test = digits_split
    data = folder / "test.npz"
    np.savez(data, x=test.x[:120].numpy(), y=test.y[:120].numpy())
    return model, data
