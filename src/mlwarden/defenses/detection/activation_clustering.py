"""Activation clustering: a poisoned class splits into two clusters of activations.

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy and Srivastava, "Detecting
Backdoor Attacks on Deep Neural Networks by Activation Clustering", AAAI SafeAI 2019.
Per class: reduce the last hidden layer's activations to 10 dimensions (the paper
uses ICA; we use PCA, which on small models isolated the poison far better in our
runs and is deterministic), split them with 2-means, and call the class poisoned when
the smaller cluster is below ``size_threshold`` of the class (the paper's relative-size
criterion, 0.35) *and* the split is well separated (silhouette score above
``silhouette_threshold``). The smaller cluster of a poisoned class is reported as suspicious.

scikit-learn does the PCA, k-means and silhouette. The relative-size rule assumes the
poison is under ``size_threshold`` of its class: when an attacker floods a class (more
than a third of it poisoned) the split is balanced and the rule stays silent, which is
why the spectral-signature scores are reported next to it. ``clusters_`` keeps every
class's smaller cluster, flagged or not, for inspection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlwarden.core.contract import Capability
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.detection._features import class_representations


class ActivationClustering:
    """Per-class 2-means on ICA-reduced activations; flags the small cluster of a split class."""

    name = "activation_clustering"
    title = "activation clustering"
    requirements: tuple[Capability, ...] = (Capability.FEATURES,)
    """What the model must offer (`mlwarden.core.contract`): penultimate activations."""

    def __init__(
        self,
        n_components: int = 10,
        size_threshold: float = 0.35,
        silhouette_threshold: float = 0.15,
        layer: str | None = None,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.size_threshold = size_threshold
        self.silhouette_threshold = silhouette_threshold
        self.layer = layer
        self.batch_size = batch_size
        self.seed = seed

    def fit(self, classifier: Any, x: torch.Tensor, y: torch.Tensor) -> ActivationClustering:
        """Cluster each class; sets ``suspicious_`` (N,), ``poisoned_classes_``, class stats."""
        if self.n_components <= 0:
            raise ParameterError(f"n_components must be positive, got {self.n_components}")
        if not 0.0 < self.size_threshold < 0.5:
            raise ParameterError(f"size_threshold must be in (0, 0.5), got {self.size_threshold}")
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        feats, self.layer_ = class_representations(classifier, x, y, self.layer, self.batch_size)
        y = y.cpu()
        suspicious = torch.zeros(len(x), dtype=torch.bool)
        stats: dict[int, dict[str, float]] = {}
        poisoned: list[int] = []
        clusters: dict[int, torch.Tensor] = {}
        for cls in torch.unique(y).tolist():
            idx = torch.nonzero(y == cls).flatten()
            if len(idx) < 2 * self.n_components:
                continue
            acts = feats[idx].numpy().astype(np.float64)
            acts = acts[:, acts.std(0) > 1e-8]  # dead units carry nothing and break ICA
            dims = min(self.n_components, acts.shape[1], len(idx) - 1)
            if dims < 1:
                continue
            reduced = PCA(n_components=dims, random_state=self.seed).fit_transform(acts)
            labels = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
            counts = np.bincount(labels, minlength=2)
            small = int(np.argmin(counts))
            rel = float(counts[small] / len(idx))
            sil = float(silhouette_score(reduced, labels)) if counts.min() > 1 else 0.0
            stats[cls] = {"relative_size": rel, "silhouette": sil}
            clusters[cls] = idx[torch.from_numpy(labels == small)]
            if rel < self.size_threshold and sil > self.silhouette_threshold:
                poisoned.append(cls)
                suspicious[idx[torch.from_numpy(labels == small)]] = True
        self.class_stats_ = stats
        self.clusters_ = clusters
        self.poisoned_classes_ = poisoned
        self.suspicious_ = suspicious
        return self

    def suspicious_indices(self) -> torch.Tensor:
        return torch.nonzero(self.suspicious_).flatten()
