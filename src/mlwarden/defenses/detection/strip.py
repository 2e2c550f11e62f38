"""STRIP: flag inputs whose prediction survives superimposition with clean images.

Gao, Xu, Wang, Chen, Ranasinghe and Nepal, "STRIP: A Defence Against Trojan Attacks
on Deep Neural Networks", ACSAC 2019. A triggered input keeps predicting the target
class when blended with random clean images (the trigger dominates), so the entropy
of its predictions under ``n_overlays`` superimpositions is abnormally *low*. The
threshold is calibrated on clean data only, as the quantile that rejects a chosen
``frr`` (false rejection rate) of clean inputs; no trojaned sample is needed.
``mode="add"`` superimposes as the paper does (pixel sum saturating at the upper
bound, so a bright trigger survives); ``mode="blend"`` mixes with weight ``alpha``.

scikit-learn style: ``fit(classifier, clean_x)`` learns ``threshold_``; ``score(x)``
returns the entropies; ``predict(x)`` returns a boolean "trojaned" flag per input. The
gateway calls ``predict`` per request.
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.seeding import make_generator


class STRIP:
    """Entropy-under-superimposition detector with an FRR-calibrated threshold."""

    def __init__(
        self,
        n_overlays: int = 16,
        frr: float = 0.01,
        mode: str = "add",
        alpha: float = 0.5,
        pool_size: int = 256,
        batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        self.n_overlays = n_overlays
        self.frr = frr
        self.mode = mode
        self.alpha = alpha
        self.pool_size = pool_size
        self.batch_size = batch_size
        self.seed = seed

    def _validate(self) -> None:
        if self.n_overlays <= 0:
            raise ParameterError(f"n_overlays must be positive, got {self.n_overlays}")
        if not 0.0 < self.frr < 1.0:
            raise ParameterError(f"frr must be in (0, 1), got {self.frr}")
        if self.mode not in ("add", "blend"):
            raise ParameterError(f"mode must be 'add' or 'blend', got {self.mode!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ParameterError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.pool_size < 2:
            raise ParameterError(f"pool_size must be at least 2, got {self.pool_size}")
        if self.batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {self.batch_size}")

    def fit(self, classifier: Any, clean_x: torch.Tensor) -> STRIP:
        """Keep a pool of clean overlays and learn ``threshold_`` so that ``frr`` of clean
        inputs are flagged.

        Half of ``clean_x`` provides the overlay pool and the other half calibrates
        the threshold, so the calibration entropies are not computed on inputs
        blended with themselves.
        """
        self._validate()
        classifier.spec.validate_batch(clean_x, what="clean data")
        if len(clean_x) < 4:
            raise DataError(
                f"STRIP needs at least 4 clean samples to calibrate, got {len(clean_x)}"
            )
        gen = make_generator(self.seed)
        order = torch.randperm(len(clean_x), generator=gen)
        half = len(clean_x) // 2
        pool = clean_x[order[: min(half, self.pool_size)]]
        calib = clean_x[order[half:]]
        self.classifier_ = classifier
        self.overlays_ = pool.detach().clone()
        entropies = self._entropy(calib, offset=1)
        self.clean_entropy_ = entropies
        self.threshold_ = float(torch.quantile(entropies, self.frr))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise InputError("STRIP is not fitted: call fit(classifier, clean_x) first")

    def _entropy(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Mean prediction entropy of each input over ``n_overlays`` superimpositions.

        The overlays for input ``i`` are drawn from a generator seeded with
        ``seed + offset``, so the same batch always gets the same score.
        """
        classifier = self.classifier_
        self.classifier_.spec.validate_batch(x, what="STRIP input")
        gen = make_generator(self.seed + 7919 * (offset + 1))
        n = len(x)
        if n == 0:
            return torch.empty(0)
        pick = torch.randint(0, len(self.overlays_), (n, self.n_overlays), generator=gen)
        overlays = self.overlays_[pick]  # (N, n_overlays, ...)
        low, high = classifier.spec.bounds
        if self.mode == "add":  # the paper's superimposition: pixel sum, saturating at the bound
            blended = (x[:, None] + (overlays - low)).clamp(low, high)
        else:
            blended = ((1 - self.alpha) * x[:, None] + self.alpha * overlays).clamp(low, high)
        probs = classifier.probabilities(blended.flatten(0, 1), batch_size=self.batch_size).cpu()
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
        return ent.view(n, self.n_overlays).mean(1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """STRIP entropy per input (lower = more likely trojaned)."""
        self._check_fitted()
        return self._entropy(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``True`` for inputs flagged as carrying a trigger (entropy below ``threshold_``)."""
        return self.score(x) < self.threshold_
