"""Model files written once per session from the shared ``digits_cnn`` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlwarden.core import Classifier, InputSpec
from mlwarden.io.dataset import Dataset
from mlwarden.io.export import export_onnx, save_pt2, save_weights

FACTORY = "mlwarden.models:SmallCNN"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def saved(digits_cnn: Classifier, model_dir: Path) -> dict[str, Path]:
    """The same trained SmallCNN in every format the loader reads."""
    module = digits_cnn.module
    paths = {
        "pt2": save_pt2(digits_cnn, model_dir / "cnn.pt2"),
        "safetensors": save_weights(digits_cnn, model_dir / "cnn.safetensors"),
        "onnx": export_onnx(digits_cnn, model_dir / "cnn.onnx"),
        "pt": model_dir / "cnn.pt",
        "ckpt": model_dir / "cnn.ckpt",
    }
    torch.save(module.state_dict(), paths["pt"])
    torch.save({"model_state_dict": module.state_dict(), "epoch": 15}, paths["ckpt"])
    return paths


@pytest.fixture(scope="session")
def test_batch(digits_split: tuple[Dataset, Dataset]) -> tuple[torch.Tensor, torch.Tensor]:
    """200 held-out digits: enough to catch a wrong weight, fast to evaluate."""
    _, test = digits_split
    return test.x[:200], test.y[:200]


@pytest.fixture(scope="session")
def normalised_cnn(digits_cnn: Classifier) -> Classifier:
    """The trained CNN behind a non-trivial normalisation, to check it survives export."""
    spec = InputSpec(
        shape=digits_cnn.spec.shape,
        class_names=digits_cnn.spec.class_names,
        mean=(0.3,),
        std=(0.5,),
    )
    return Classifier(digits_cnn.module, spec, name="normalised")
