"""Spectral signatures: poisoned samples stand out along the top singular direction of their class.

Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018. For each
class, centre the penultimate representations, take the top right-singular vector
``v`` and score each sample by ``((r - mean) . v)^2``. Poisoned samples, which the
network separates from the clean ones of their (target) label, get the largest
scores; the paper removes the top ``1.5 * eps`` fraction of each class, ``eps`` being an
upper bound on the poisoning rate.
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.core.contract import Capability
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.detection._features import class_representations


class SpectralSignatures:
    """Score and flag suspicious training samples; ``eps`` is the assumed poison rate bound."""

    name = "spectral_signatures"
    title = "spectral signatures"
    requirements: tuple[Capability, ...] = (Capability.FEATURES,)
    """What the model must offer (`mlwarden.core.contract`): penultimate activations."""

    def __init__(
        self,
        eps: float = 0.1,
        removal_factor: float = 1.5,
        layer: str | None = None,
        batch_size: int = 256,
    ) -> None:
        self.eps = eps
        self.removal_factor = removal_factor
        self.layer = layer
        self.batch_size = batch_size

    def fit(self, classifier: Any, x: torch.Tensor, y: torch.Tensor) -> SpectralSignatures:
        """Compute ``scores_`` (N,) and ``suspicious_`` (N,) booleans for the training set."""
        if not 0.0 < self.eps < 1.0:
            raise ParameterError(f"eps must be in (0, 1), got {self.eps}")
        if self.removal_factor <= 0:
            raise ParameterError(f"removal_factor must be positive, got {self.removal_factor}")
        feats, self.layer_ = class_representations(classifier, x, y, self.layer, self.batch_size)
        y = y.cpu()
        scores = torch.zeros(len(x))
        suspicious = torch.zeros(len(x), dtype=torch.bool)
        for cls in torch.unique(y):
            idx = torch.nonzero(y == cls).flatten()
            if len(idx) < 3:
                continue
            reps = feats[idx].double()
            centred = reps - reps.mean(0, keepdim=True)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            score = (centred @ vh[0]) ** 2
            scores[idx] = score.float()
            remove = min(len(idx) - 1, int(round(self.removal_factor * self.eps * len(idx))))
            if remove > 0:
                top = torch.topk(score, remove).indices
                suspicious[idx[top]] = True
        self.scores_ = scores
        self.suspicious_ = suspicious
        return self

    def suspicious_indices(self) -> torch.Tensor:
        return torch.nonzero(self.suspicious_).flatten()
