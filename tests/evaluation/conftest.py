"""Fixtures for the evaluation tests: the digits CNN as a .pt2 file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.core import Classifier


@pytest.fixture(scope="session")
def digits_cnn_pt2(digits_cnn: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlwarden.io.export import save_pt2

    path = tmp_path_factory.mktemp("evaluation") / "digits_cnn.pt2"
    save_pt2(digits_cnn, path)
    return path
