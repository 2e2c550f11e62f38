"""One forward pass that yields everything the gateway needs: probabilities and the OOD
validator's scores, computed batch-wise in the model's worker thread so input checking
costs no second pass and no time on the event loop."""

from __future__ import annotations

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.oracle import Oracle
from mlwarden.defenses.detection.ood import EnergyDetector, MahalanobisDetector


class ModelRunner:
    """Callable (N, ...) -> (probabilities, OOD scores | None)."""

    def __init__(self, model: Classifier | Oracle,
                 validator: MahalanobisDetector | EnergyDetector | None = None) -> None:
        self.model = model
        self.validator = validator
        feature_layer = validator.layer_ if isinstance(validator, MahalanobisDetector) else None
        self.feature_layer = feature_layer if isinstance(model, Classifier) else None
        self._target: nn.Module | None = None
        if self.feature_layer is not None:
            assert isinstance(model, Classifier)
            self._target = model.module.get_submodule(self.feature_layer)

    @property
    def has_logits(self) -> bool:
        return isinstance(self.model, Classifier)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.model
        if not isinstance(model, Classifier):
            out = model(x)
            if model.output == "labels":
                probs = torch.nn.functional.one_hot(out, model.num_classes).float()
            else:
                probs = out
            return probs, None
        captured: list[torch.Tensor] = []
        handle = None
        if self._target is not None:
            handle = self._target.register_forward_hook(
                lambda _m, _i, out: captured.append(out.detach())
            )
        try:
            logits = model.logits(x, batch_size=None)
        finally:
            if handle is not None:
                handle.remove()
        scores = None
        if isinstance(self.validator, MahalanobisDetector) and captured:
            scores = self.validator.score_features(captured[-1].flatten(1))
        elif isinstance(self.validator, EnergyDetector):
            scores = self.validator.score_logits(logits)
        return torch.softmax(logits, dim=1), scores
