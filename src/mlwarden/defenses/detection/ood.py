"""Out-of-distribution validators: fit on training features, score, calibrated threshold.

Why: an input far from the training distribution gets a confident but meaningless answer,
and model-stealing or probing clients query exactly such inputs (random noise, synthetic
points). Two scores, both from the model itself:

- `MahalanobisDetector` (Lee et al., 2018, "A simple unified framework for detecting
  out-of-distribution samples and adversarial attacks"): class-conditional Gaussians with a
  shared covariance on a feature layer; the score is the smallest Mahalanobis distance to
  a class mean.
- `EnergyDetector` (Liu et al., 2020, "Energy-based out-of-distribution detection"): the
  free energy ``-T logsumexp(logits / T)``.

For both, higher means more out-of-distribution. ``threshold_`` is the ``1 -
false_rejection_rate`` quantile of scores on a held-out calibration split of the fit data,
so about that fraction of in-distribution inputs is rejected. Fitted state is saved as
``.safetensors`` (tensors plus JSON metadata, nothing executable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.seeding import make_generator

FORMAT = "mlwarden.ood/1"


def _check_frr(frr: float) -> None:
    if not 0.0 < frr < 0.5:
        raise ParameterError(f"false_rejection_rate must be in (0, 0.5), got {frr}")


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"calibration_fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=make_generator(seed))
    cut = max(1, int(round(n * fraction)))
    return perm[cut:], perm[:cut]


class _Detector:
    kind = "base"
    threshold_: float
    false_rejection_rate: float

    def is_fitted(self) -> bool:
        return hasattr(self, "threshold_")

    def _require_fitted(self) -> None:
        if not self.is_fitted():
            raise InputError(f"{type(self).__name__} is not fitted; call fit() first")

    def predict_ood(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a score is above the calibrated threshold."""
        self._require_fitted()
        return scores > self.threshold_

    def _calibrate(self, scores: torch.Tensor) -> None:
        self.threshold_ = float(torch.quantile(scores.double(), 1.0 - self.false_rejection_rate))
        self.calibration_scores_ = scores.detach().cpu().float()


class MahalanobisDetector(_Detector):
    """Minimum class-conditional Mahalanobis distance on a feature layer (Lee et al., 2018)."""

    kind = "mahalanobis"

    def __init__(
        self,
        layer: str | None = None,
        false_rejection_rate: float = 0.01,
        calibration_fraction: float = 0.2,
        shrinkage: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.layer = layer
        self.false_rejection_rate = false_rejection_rate
        self.calibration_fraction = calibration_fraction
        self.shrinkage = shrinkage
        self.seed = seed

    def fit(
        self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> MahalanobisDetector:
        _check_frr(self.false_rejection_rate)
        if self.shrinkage < 0:
            raise ParameterError(f"shrinkage must be >= 0, got {self.shrinkage}")
        classifier.spec.validate_batch(x, what="fit data")
        if len(x) < 20:
            raise DataError(f"fit data has {len(x)} samples; need at least 20")
        layer = self.layer or classifier.penultimate_layer()
        feats = classifier.features(x, layer)
        labels = classifier.predict(x) if y is None else y.to(feats.device)
        return self.fit_features(feats, labels, layer=layer)

    def fit_features(
        self, feats: torch.Tensor, labels: torch.Tensor, *, layer: str
    ) -> MahalanobisDetector:
        """Fit on already-extracted features ``(N, D)`` named ``layer`` (e.g. the sentence
        embeddings the gateway computes for a text model, which no module layer holds)."""
        _check_frr(self.false_rejection_rate)
        if self.shrinkage < 0:
            raise ParameterError(f"shrinkage must be >= 0, got {self.shrinkage}")
        if len(feats) < 20:
            raise DataError(f"fit data has {len(feats)} samples; need at least 20")
        self.layer_ = layer
        feats = feats.flatten(1).double()
        labels = labels.to(feats.device)
        fit_idx, cal_idx = _split(len(feats), self.calibration_fraction, self.seed)
        f, lab = feats[fit_idx], labels[fit_idx]
        classes = torch.unique(lab)
        means = torch.stack([f[lab == c].mean(0) for c in classes])
        centred = f - means[torch.searchsorted(classes, lab)]
        cov = centred.T @ centred / len(f)
        scale = float(cov.diagonal().mean()) or 1.0
        cov = cov + self.shrinkage * scale * torch.eye(cov.shape[0], dtype=cov.dtype)
        self.means_ = means.float()
        self.precision_ = torch.linalg.pinv(cov).float()
        self._mpm_cache = None
        self.classes_ = classes.cpu()
        self._calibrate(self.score_features(feats[cal_idx].float()))
        return self

    def score_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Scores for already-extracted features of ``layer_`` (one forward pass serves both)."""
        if not hasattr(self, "means_"):
            raise InputError("MahalanobisDetector is not fitted; call fit() first")
        feats = feats.flatten(1).to(self.means_.device, torch.float32)
        if feats.shape[1] != self.means_.shape[1]:
            raise DataError(
                f"features have {feats.shape[1]} dimensions; the detector was fitted on "
                f"{self.means_.shape[1]} (layer '{self.layer_}')"
            )
        # (f - m)^T P (f - m) = f^T P f - 2 (P f)^T m + m^T P m, for all classes at once:
        # two matrix products instead of an (N, C, D) broadcast
        fp = feats @ self.precision_
        d2 = (fp * feats).sum(1, keepdim=True) - 2.0 * fp @ self.means_.T + self._mpm()[None, :]
        return d2.min(dim=1).values.clamp_min(0)

    def _mpm(self) -> torch.Tensor:
        cached = getattr(self, "_mpm_cache", None)
        if cached is None:
            cached = ((self.means_ @ self.precision_) * self.means_).sum(1)
            self._mpm_cache = cached
        return cached

    def score(self, classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        return self.score_features(classifier.features(x, self.layer_))

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"means": self.means_, "precision": self.precision_, "classes": self.classes_}

    def _params(self) -> dict[str, Any]:
        return {"layer": self.layer_, "shrinkage": self.shrinkage}

    def _restore(self, tensors: dict[str, torch.Tensor], params: dict[str, Any]) -> None:
        self.layer = self.layer_ = params["layer"]
        self.shrinkage = params["shrinkage"]
        self.means_ = tensors["means"]
        self.precision_ = tensors["precision"]
        self._mpm_cache = None
        self.classes_ = tensors["classes"]


class EnergyDetector(_Detector):
    """Free energy of the logits (Liu et al., 2020); needs logits, not only probabilities."""

    kind = "energy"

    def __init__(
        self,
        temperature: float = 1.0,
        false_rejection_rate: float = 0.01,
        calibration_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.temperature = temperature
        self.false_rejection_rate = false_rejection_rate
        self.calibration_fraction = calibration_fraction
        self.seed = seed

    def fit(
        self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> EnergyDetector:
        _check_frr(self.false_rejection_rate)
        if self.temperature <= 0:
            raise ParameterError(f"temperature must be positive, got {self.temperature}")
        classifier.spec.validate_batch(x, what="fit data")
        if len(x) < 20:
            raise DataError(f"fit data has {len(x)} samples; need at least 20")
        _, cal_idx = _split(len(x), self.calibration_fraction, self.seed)
        self._calibrate(self.score_logits(classifier.logits(x[cal_idx])))
        return self

    def fit_logits(self, logits: torch.Tensor) -> EnergyDetector:
        """Calibrate on the logits ``(N, C)`` of in-distribution data (a text model's, say,
        computed by the caller); a held-out share of them, as `fit` does."""
        _check_frr(self.false_rejection_rate)
        if self.temperature <= 0:
            raise ParameterError(f"temperature must be positive, got {self.temperature}")
        if len(logits) < 20:
            raise DataError(f"fit data has {len(logits)} samples; need at least 20")
        _, cal_idx = _split(len(logits), self.calibration_fraction, self.seed)
        self._calibrate(self.score_logits(logits[cal_idx]))
        return self

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return -t * torch.logsumexp(logits.float() / t, dim=1)

    def score(self, classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        return self.score_logits(classifier.logits(x))

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _restore(self, tensors: dict[str, torch.Tensor], params: dict[str, Any]) -> None:
        self.temperature = float(params["temperature"])


OODDetector = MahalanobisDetector | EnergyDetector
_KINDS: dict[str, type[_Detector]] = {"mahalanobis": MahalanobisDetector, "energy": EnergyDetector}


def save_detector(
    detector: OODDetector, path: Path, extra: dict[str, Any] | None = None
) -> None:
    """Write a fitted detector (and ``extra`` JSON-able settings) to ``path`` (.safetensors)."""
    from safetensors.torch import save_file

    detector._require_fitted()
    meta = {
        "format": FORMAT,
        "kind": detector.kind,
        "threshold": detector.threshold_,
        "false_rejection_rate": detector.false_rejection_rate,
        "params": detector._params(),
        "extra": extra or {},
    }
    tensors = {k: v.contiguous().cpu() for k, v in detector._tensors().items()}
    tensors["calibration_scores"] = detector.calibration_scores_.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"mlwarden": json.dumps(meta)})


def load_detector(path: Path) -> tuple[OODDetector, dict[str, Any]]:
    """Read a detector written by `save_detector`; returns (detector, extra settings)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"validator file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("mlwarden", "{}"))
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as exc:
        raise InputError(
            f"validator file '{path}' is not a valid .safetensors file: {exc}"
        ) from None
    if meta.get("format") != FORMAT or meta.get("kind") not in _KINDS:
        raise InputError(f"'{path}' is not an mlwarden OOD validator (format {FORMAT})")
    try:
        det = _KINDS[meta["kind"]].__new__(_KINDS[meta["kind"]])
        det.false_rejection_rate = float(meta["false_rejection_rate"])
        det.threshold_ = float(meta["threshold"])
        det.calibration_scores_ = tensors.get("calibration_scores", torch.empty(0))
        det._restore(tensors, meta["params"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"validator file '{path}' is incomplete: missing {exc}") from None
    return det, dict(meta.get("extra", {}))  # type: ignore[return-value]
