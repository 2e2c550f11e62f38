"""Attack success rate and clean accuracy: the two numbers every backdoor result reports."""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.poisoning.triggers import Trigger
from mlwarden.core.errors import DataError


def attack_success_rate(
    classifier: Any, x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int
) -> float:
    """Fraction of triggered inputs whose true class is not ``target`` that the model puts
    in ``target``.

    Samples of the target class are left out, as is usual (they would count as
    successes without any backdoor).
    """
    keep = y != target
    if not bool(keep.any()):
        raise DataError("no samples outside the target class to measure the attack success rate on")
    triggered = trigger.apply(x[keep], classifier.spec.bounds)
    pred = classifier.predict(triggered).cpu()
    return float((pred == target).float().mean())


def backdoor_metrics(
    classifier: Any, x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int
) -> dict[str, float]:
    """``{"clean_accuracy": ..., "asr": ...}`` on a held-out clean set."""
    return {
        "clean_accuracy": classifier.accuracy(x, y),
        "asr": attack_success_rate(classifier, x, y, trigger, target),
    }
