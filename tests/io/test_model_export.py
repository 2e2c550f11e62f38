"""Exporters: argument checks, atomic writes, tied weights, stored specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mlwarden.core import Classifier, InputError, InputSpec, ParameterError
from mlwarden.io import read_state_dict, save_pt2, save_weights


class _Broken(nn.Module):
    """A model whose forward fails, so export fails after the output folder exists."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward is broken")


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4, bias=False)
        self.decoder = nn.Linear(4, 4, bias=False)
        self.decoder.weight = self.encoder.weight


def test_failed_export_leaves_no_file_behind(digits_spec: InputSpec, tmp_path: Path) -> None:
    clf = Classifier(_Broken(), digits_spec)
    target = tmp_path / "out" / "model.pt2"
    with pytest.raises(InputError, match="torch.export could not export .*forward is broken"):
        save_pt2(clf, target)
    assert list(target.parent.iterdir()) == []


def test_paths_and_examples_are_checked(digits_cnn: Classifier, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="must end in .pt2"):
        save_pt2(digits_cnn, tmp_path / "model.pt")
    with pytest.raises(ParameterError, match="must end in .safetensors"):
        save_weights(digits_cnn, tmp_path / "model.bin")
    with pytest.raises(ParameterError, match=r"example has shape \(2, 3, 8, 8\)"):
        save_pt2(digits_cnn, tmp_path / "m.pt2", example=torch.rand(2, 3, 8, 8))


def test_tied_weights_and_stored_spec_round_trip(digits_spec: InputSpec, tmp_path: Path) -> None:
    module = _Tied()
    path = save_weights(module, tmp_path / "tied.safetensors", spec=digits_spec)
    state, spec = read_state_dict(path)
    assert set(state) == {"encoder.weight", "decoder.weight"}
    assert spec == digits_spec
    fresh = _Tied()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.decoder.weight, module.encoder.weight)
    _, no_spec = read_state_dict(save_weights(nn.Linear(2, 2), tmp_path / "plain.safetensors"))
    assert no_spec is None
