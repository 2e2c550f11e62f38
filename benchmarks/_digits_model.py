"""The shared benchmark subject: the SmallCNN trained on digits exactly as tests/conftest.py."""

from __future__ import annotations

import torch

from mlwarden.core import Classifier
from mlwarden.core.training import fit
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.models import SmallCNN


def digits_subject(samples: int) -> tuple[Classifier, Dataset]:
    """(trained classifier, first ``samples`` held-out digits)."""
    digits = load_builtin("digits")
    train, test = digits.split(0.75, seed=0)
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, train.x, train.y, epochs=15, lr=2e-3, batch_size=64, seed=0)
    return Classifier(module, digits.spec(), name="digits-cnn"), test.take(samples)


def robust_accuracy(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on the adversarial batch (counts clean errors as errors)."""
    return float((model.predict(x_adv.detach().cpu()) == y).float().mean())


def linf_ok(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> bool:
    return float((x_adv.detach().cpu() - x).abs().max()) <= eps + 1e-5
