"""One layer lookup gives the same, usable answer for an eager model and its ``.pt2`` export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlwarden.core import Classifier, InputSpec, ParameterError
from mlwarden.core.layers import conv_layers, head_layer, linear_layers
from mlwarden.core.oracle import ClassifierOracle
from mlwarden.core.training import fit, trainable_copy
from mlwarden.io import load_model, save_pt2
from mlwarden.io.dataset import Dataset


class PooledNet(nn.Module):
    """A timm-style layout: a body, a pooling placeholder (``nn.Identity``), then a head
    block that starts with dropout. The exported program never calls ``pool``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 32), nn.ReLU()
        )
        self.pool = nn.Identity()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(x)))


class AuxNet(nn.Module):
    """An auxiliary head registered after the real one and never called."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)
        self.aux = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _trained(
    module: nn.Module, digits_split: tuple[Dataset, Dataset], spec: InputSpec
) -> Classifier:
    train, _ = digits_split
    torch.manual_seed(0)
    fit(module, train.x, train.y, epochs=3, lr=3e-3, seed=0)
    return Classifier(module, spec, name=type(module).__name__)


def test_eager_and_exported_agree_on_every_role(
    digits_split: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    eager = _trained(PooledNet(), digits_split, digits_split[0].spec())
    _, test = digits_split
    exported = load_model(save_pt2(eager, tmp_path / "pooled.pt2", example=test.x[:8]))
    assert isinstance(exported, Classifier)
    for model in (eager, exported):
        assert linear_layers(model.module) == ["body.3", "classifier.1"]
        assert conv_layers(model.module) == ["body.0"]
        assert head_layer(model.module) == "classifier.1"
        # neither the identity nor the dropout: the block whose output the head reads
        assert model.penultimate_layer() == "body"
    feats = exported.features(test.x, exported.penultimate_layer())
    assert feats.shape == (len(test.x), 32)
    torch.testing.assert_close(feats, eager.features(test.x, "body"), atol=1e-5, rtol=1e-4)


def test_an_exported_program_skips_modules_it_never_calls(
    digits_split: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    eager = _trained(AuxNet(), digits_split, digits_split[0].spec())
    _, test = digits_split
    exported = load_model(save_pt2(eager, tmp_path / "aux.pt2", example=test.x[:8]))
    assert linear_layers(exported.module) == ["features.1", "head"]
    assert head_layer(exported.module) == "head"
    assert exported.penultimate_layer() == "features"
    assert exported.features(test.x, "features").shape == (len(test.x), 32)


def test_trainable_copy_needs_trainable_weights(digits_cnn: Classifier) -> None:
    with pytest.raises(ParameterError, match="fine-tuning needs trainable weights; 'digits-cnn'"):
        trainable_copy(ClassifierOracle(digits_cnn))
    copy = trainable_copy(digits_cnn)
    assert copy.name == "digits-cnn-student"
    assert all(p.requires_grad for p in copy.parameters())
    assert copy.module is not digits_cnn.module
