"""Correctness against torchattacks at equal budgets (needs the benchmark peers)."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.evasion import APGD, PGD
from mlwarden.core import Classifier

pytestmark = pytest.mark.peers


def _accuracy(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x_adv.detach()) == y).float().mean())


def test_pgd_matches_torchattacks(digits_cnn: Classifier, digits_batch) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits_batch[0][:100], digits_batch[1][:100]
    ours = PGD(0.1, alpha=0.025, steps=10, seed=0)(digits_cnn, x, y)
    torch.manual_seed(0)
    theirs = torchattacks.PGD(digits_cnn, eps=0.1, alpha=0.025, steps=10)(x, y)
    assert float((theirs - x).abs().max()) <= 0.1 + 1e-5
    assert _accuracy(digits_cnn, ours.x_adv, y) <= _accuracy(digits_cnn, theirs, y) + 0.03


def test_apgd_ce_within_two_points_of_torchattacks(digits_cnn: Classifier, digits_batch) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = digits_batch[0][:100], digits_batch[1][:100]
    ours = APGD(0.1, steps=20, loss="ce", seed=0)(digits_cnn, x, y)
    theirs = torchattacks.APGD(digits_cnn, norm="Linf", eps=0.1, steps=20, loss="ce", seed=0)(x, y)
    assert _accuracy(digits_cnn, ours.x_adv, y) <= _accuracy(digits_cnn, theirs, y) + 0.02
