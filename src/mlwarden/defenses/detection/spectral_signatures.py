"""Spectral signatures: poisoned samples stand out along the top singular direction of their class.

Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018. For each
class, centre the penultimate representations, take the top right-singular vector
``v`` and score each sample by ``((r - mean) . v)^2``. Poisoned samples, which the
network separates from the clean ones of their (target) label, get the largest
scores; the paper removes the top ``1.5 * eps`` fraction of each class, ``eps`` being an
upper bound on the poisoning rate.

That removal set is not a verdict: it holds ``1.5 * eps`` of every class whatever the
data. What poison leaves is an *outlier mass* along ``v``: we take the signed
projections ``p = (r - mean) . v`` of a class, their robust z-scores
``|p - median(p)| / (1.4826 * MAD(p))``, and call a class suspicious only when at least
``min_outliers`` samples lie beyond ``z_threshold`` (both set on clean models: on three
digits SmallCNNs and three breast-cancer MLPs no class had 3 samples beyond z = 4,
`benchmarks/data_scan_eval.py`).
``outliers_`` marks those samples, at most the ``1.5 * eps`` most extreme of each class.

`robust_spectral_z` is the same projection after a *robust* whitening of the class (Hayase,
Kong, Somani and Oh, "SPECTRE: Defending Against Backdoor Attacks Using Robust Statistics",
ICML 2021: the covariance of the clean majority, estimated with the minimum covariance
determinant, is whitened away, so the direction left with the most spread is the poison's
rather than the class's natural variation). Activation clustering uses it on tabular inputs,
where it is the candidate that the exclusionary-reclassification test confirms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlwarden.core.contract import Capability
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.detection._features import class_representations

Z_THRESHOLD = 4.0
"""Robust z beyond which a sample belongs to an outlier mass (set on clean models)."""
MIN_OUTLIERS = 3
"""Samples beyond ``Z_THRESHOLD`` that make an outlier mass."""


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
        z_threshold: float = Z_THRESHOLD,
        min_outliers: int = MIN_OUTLIERS,
        layer: str | None = None,
        batch_size: int = 256,
    ) -> None:
        self.eps = eps
        self.removal_factor = removal_factor
        self.z_threshold = z_threshold
        self.min_outliers = min_outliers
        self.layer = layer
        self.batch_size = batch_size

    def fit(self, classifier: Any, x: torch.Tensor, y: torch.Tensor) -> SpectralSignatures:
        """Compute ``scores_`` (N,), robust ``z_`` (N,), the paper's removal set ``suspicious_``
        (N,), the ``outliers_`` (N,) of the classes with an outlier mass, listed in
        ``outlier_classes_``."""
        if not 0.0 < self.eps < 1.0:
            raise ParameterError(f"eps must be in (0, 1), got {self.eps}")
        if self.removal_factor <= 0:
            raise ParameterError(f"removal_factor must be positive, got {self.removal_factor}")
        if self.z_threshold <= 0 or self.min_outliers < 1:
            raise ParameterError(
                f"z_threshold must be positive and min_outliers at least 1, got "
                f"{self.z_threshold} and {self.min_outliers}"
            )
        feats, self.layer_ = class_representations(classifier, x, y, self.layer, self.batch_size)
        y = y.cpu()
        scores = torch.zeros(len(x))
        z = torch.zeros(len(x))
        suspicious = torch.zeros(len(x), dtype=torch.bool)
        outliers = torch.zeros(len(x), dtype=torch.bool)
        outlier_classes: list[int] = []
        for cls in torch.unique(y):
            idx = torch.nonzero(y == cls).flatten()
            if len(idx) < 3:
                continue
            reps = feats[idx].double()
            centred = reps - reps.mean(0, keepdim=True)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            proj = centred @ vh[0]
            score = proj**2
            scores[idx] = score.float()
            zc = robust_z(proj)
            z[idx] = zc.float()
            remove = min(len(idx) - 1, int(round(self.removal_factor * self.eps * len(idx))))
            if remove > 0:
                top = torch.topk(score, remove).indices
                suspicious[idx[top]] = True
            beyond = torch.nonzero(zc > self.z_threshold).flatten()
            if len(beyond) >= self.min_outliers:
                outlier_classes.append(int(cls))
                beyond = beyond[torch.argsort(zc[beyond], descending=True)][: max(remove, 1)]
                outliers[idx[beyond]] = True
        self.scores_ = scores
        self.z_ = z
        self.suspicious_ = suspicious
        self.outliers_ = outliers
        self.outlier_classes_ = outlier_classes
        return self

    def suspicious_indices(self) -> torch.Tensor:
        """The paper's removal set (top ``1.5 * eps`` of every class), whatever the data."""
        return torch.nonzero(self.suspicious_).flatten()

    def outlier_indices(self) -> torch.Tensor:
        """The samples of the outlier mass: what the scan reports."""
        return torch.nonzero(self.outliers_).flatten()


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """``|v - median| / (1.4826 * MAD)``: a z-score the outliers it looks for cannot inflate."""
    median = values.median()
    mad = (values - median).abs().median() * 1.4826
    return (values - median).abs() / mad.clamp_min(1e-12)


def robust_spectral_z(values: np.ndarray, n_components: int = 10, seed: int = 0) -> np.ndarray:
    """Robust z of each row along the top singular direction of the robustly whitened rows
    (SPECTRE's whitening, Hayase et al. 2021): PCA to ``n_components``, the minimum
    covariance determinant's location and covariance of the majority, whitening by that
    covariance, then `robust_z` of the projection. Zeros when the rows span no direction."""
    import warnings

    from sklearn.covariance import MinCovDet
    from sklearn.decomposition import PCA

    rows = values.reshape(len(values), -1).astype(np.float64)
    rows = rows[:, rows.std(0) > 1e-8]
    dims = min(n_components, rows.shape[1], len(rows) - 2)
    if dims < 1:
        return np.zeros(len(values))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(rows)
    with warnings.catch_warnings():  # a rank-deficient majority warns; pinv copes with it
        warnings.simplefilter("ignore")
        mcd = MinCovDet(random_state=seed).fit(reduced)
    evals, evecs = np.linalg.eigh(mcd.covariance_)
    keep = evals > 1e-12 * max(float(evals.max()), 1e-300)
    if not keep.any():
        return np.zeros(len(values))
    whitened = (reduced - mcd.location_) @ (evecs[:, keep] / np.sqrt(evals[keep]))
    centred = whitened - whitened.mean(0, keepdims=True)
    _, _, vh = np.linalg.svd(centred, full_matrices=False)
    return robust_z(torch.from_numpy(whitened @ vh[0])).numpy()
