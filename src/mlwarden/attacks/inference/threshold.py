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


def true_class_log_probability(
    oracle: Oracle, x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> torch.Tensor:
    """``log p_y`` of each sample in float64 (= minus its cross-entropy loss)."""
    return _true_and_rest(oracle, x, y, batch)[0]


def membership_logit(
    oracle: Oracle, x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> torch.Tensor:
    """LiRA's scaled confidence ``log(p_y / (1 - p_y))``, computed stably in float64.

    As ``log p_y - logsumexp_{j != y} log p_j`` from log-probabilities, so records the
    model is sure of keep distinct scores instead of all tying at ``p = 1``.
    """
    true, rest = _true_and_rest(oracle, x, y, batch)
    return true - rest


def _true_and_rest(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, batch: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    if oracle.output != "probabilities":
        raise OracleError("membership inference needs scores; this oracle returns labels only")
    true, rest = [], []
    for start in range(0, len(x), batch):
        logp = oracle.log_probabilities(x[start : start + batch])
        idx = y[start : start + batch].view(-1, 1).cpu()
        true.append(logp.gather(1, idx).squeeze(1))
        others = logp.scatter(1, idx, float("-inf"))
        rest.append(torch.logsumexp(others, dim=1))
    return torch.cat(true), torch.cat(rest)


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
        if self.signal == "confidence":
            return true_class_probability(oracle, x, y)
        if self.signal == "logit":
            return membership_logit(oracle, x, y)
        return true_class_log_probability(oracle, x, y)  # = -cross-entropy loss
