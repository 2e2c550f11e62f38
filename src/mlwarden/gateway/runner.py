"""One forward pass that yields everything the gateway needs: probabilities and the OOD
validator's scores, computed batch-wise in the model's worker thread so input checking
costs no second pass and no time on the event loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mlwarden.core.contract import (
    Capability,
    ModelKind,
    describe,
    kind_of,
    missing,
    offers,
    require,
)
from mlwarden.core.errors import ConfigError
from mlwarden.defenses.detection.ood import EnergyDetector, MahalanobisDetector

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.oracle import Oracle

VALIDATOR_NEEDS = (Capability.FEATURES,)
"""What an OOD validator needs of the model: its hidden features (Mahalanobis) or logits
(energy), which only a white-box classifier exposes."""


def check_validator(model: Classifier | Oracle) -> None:
    """`ConfigError` unless ``model`` can feed an OOD validator (a text model's works on
    its sentence embeddings, `mlwarden.gateway.text`); call it before fitting or loading one."""
    text = Capability.TEXT_INPUTS in offers(model)  # fitted on its sentence embeddings
    lacking = missing(model, (Capability.TEXT_INPUTS, *VALIDATOR_NEEDS) if text
                      else VALIDATOR_NEEDS)
    if lacking:
        raise ConfigError(
            f"gateway.validation.validator: an OOD validator needs "
            f"{', '.join(c.value for c in lacking)}; {describe(model)}, a black-box model "
            "(e.g. ONNX) that exposes none; remove the validator"
        )


class ModelRunner:
    """Callable (N, ...) -> (probabilities, OOD scores | None)."""

    def __init__(self, model: Classifier | Oracle,
                 validator: MahalanobisDetector | EnergyDetector | None = None) -> None:
        # The gateway takes tensors today: a text model is refused here, with its kind named.
        require(model, (Capability.LABELS,), by="the gateway")
        if validator is not None:
            check_validator(model)
        self.model = model
        self.validator = validator
        kind = kind_of(model)
        self.white_box = kind is ModelKind.CLASSIFIER
        self.labels_only = Capability.SCORES not in offers(model)
        self.feature_layer = (validator.layer_ if isinstance(validator, MahalanobisDetector)
                              else None)
        self._target: nn.Module | None = None
        if self.feature_layer is not None:
            self._target = model.module.get_submodule(self.feature_layer)  # type: ignore[union-attr]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        model = self.model
        if not self.white_box:
            out = model(x)
            if self.labels_only:
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
            logits = model.logits(x, batch_size=None)  # type: ignore[union-attr]
        finally:
            if handle is not None:
                handle.remove()
        scores = None
        if isinstance(self.validator, MahalanobisDetector) and captured:
            scores = self.validator.score_features(captured[-1].flatten(1))
        elif isinstance(self.validator, EnergyDetector):
            scores = self.validator.score_logits(logits)
        return torch.softmax(logits, dim=1), scores
