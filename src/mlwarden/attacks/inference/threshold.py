"""Loss / confidence threshold membership inference (Yeom et al., CSF 2018).

The simplest attack: a model's loss on its training points is lower than on unseen
points, so ``-loss`` (or the confidence in the true class) is a membership score. It
needs only scores from the oracle and costs one query per sample: a baseline every
privacy audit should run before the expensive shadow-model attacks.
"""

from __future__ import annotations

from typing import Literal

import torch

from mlwarden.core.errors import OracleError, ParameterError
from mlwarden.core.oracle import Oracle

Signal = Literal["loss", "confidence", "logit"]


def true_class_probability(
    oracle: Oracle, x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> torch.Tensor:
    """Probability the oracle gives the true class of each sample."""
    if oracle.output != "probabilities":
        raise OracleError("membership inference needs scores; this oracle returns labels only")
    out = []
    for start in range(0, len(x), batch):
        probs = oracle(x[start : start + batch]).cpu()
        out.append(probs.gather(1, y[start : start + batch].view(-1, 1).cpu()).squeeze(1))
    return torch.cat(out).double()


def scaled_logit(p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``log(p / (1 - p))``: makes the true-class confidence roughly Gaussian (LiRA, sec. 4)."""
    p = p.double().clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


class ThresholdAttack:
    """Score = the chosen signal of the target model on ``(x, y)``; higher = member."""

    def __init__(self, signal: Signal = "loss") -> None:
        if signal not in ("loss", "confidence", "logit"):
            raise ParameterError(f"signal must be 'loss', 'confidence' or 'logit', got {signal!r}")
        self.signal = signal

    def score(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = true_class_probability(oracle, x, y)
        if self.signal == "confidence":
            return p
        if self.signal == "logit":
            return scaled_logit(p)
        return torch.log(p.clamp_min(1e-300))  # = -cross-entropy loss
