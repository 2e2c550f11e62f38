"""Activation clustering: a poisoned class splits into two clusters of activations.

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy and Srivastava, "Detecting
Backdoor Attacks on Deep Neural Networks by Activation Clustering", AAAI SafeAI 2019.
Per class: reduce the last hidden layer's activations to 10 dimensions (the paper
uses ICA; we use PCA, which on small models isolated the poison far better in our
runs and is deterministic) and split them with 2-means. Two clusters exist in almost
every clean class (writing styles, sub-types), so a split alone proves nothing. The
smaller cluster is a *candidate* when it is under ``size_threshold`` of its class (the
paper's relative size, 0.35) and the split is separated (silhouette above
``silhouette_threshold``), and it is reported only when it also passes two tests:

1. **Exclusionary reclassification** (the paper's Sec. 4): a classifier fitted on the
   data *without* the cluster (a ``n_neighbors``-NN on the inputs) labels the cluster's
   samples; poison is reclassified to its source classes, so at least
   ``reclass_threshold`` of them must leave their label. The reclassifier works on the
   inputs, not on the model's activations: in the poisoned model's activation space
   the poison sits next to its target class (5-NN reclassified 24% of a BadNets
   cluster on digits), which is what the model was poisoned to do.
2. **Trigger persistence** against the class's own main cluster: each sample is
   superimposed on ``n_overlays`` samples of other classes (STRIP's pixel sum, Gao et al.
   2019) and the model keeps the class label for a trigger-carrying sample, whatever it
   is mixed with. The cluster's keep rate must exceed the main cluster's by
   ``persistence_margin``. Digits of odd writing styles also pass test 1 (a whole
   sub-mode removed leaves no neighbour of their class: up to 89% reclassified on clean
   digits models), but their label does not survive superimposition better than the rest
   of their class (gap at most 0.19 over 8 such clean clusters, 0.52 and 0.70 for two
   BadNets clusters; `benchmarks/data_scan_eval.py`, per-class tables).

**Tabular inputs** (shape ``(F,)``) take another path, because neither the split nor test 2
means anything there. On 5%-BadNets breast_cancer (a run of 3 features set to 1, 0, 1) the
MLP's activations put the poison in no 2-means cluster (at most 22% poison in any cluster) and
the saturating feature sum pushes every sample to one class (persistence 1.0 for both clusters
of one class, 0.0 for the other's). The poison is, however, an outlier mass of its class's
*inputs* once their natural spread is robustly whitened (`robust_spectral_z`, SPECTRE's
whitening): the candidate is the class's samples beyond robust z ``Z_THRESHOLD`` (at least
``MIN_OUTLIERS`` of them, under ``size_threshold`` of the class), and it is reported when test
1 (its k-NN on features standardised over the training set: on their raw scales a few
wide features decide the neighbours) reclassifies at least ``reclass_threshold`` of it; the
samples the k-NN reclassified are listed. Clean tabular outliers are extreme cases of their
own class and keep their label (see docs/backdoors.md for the measured rates).

scikit-learn does the PCA, k-means, silhouette, minimum covariance determinant and nearest
neighbours. The relative-size rule assumes the poison is under ``size_threshold`` of its
class: when an attacker floods a class (more than a third of it poisoned) the split is
balanced and the rule stays silent. ``clusters_`` keeps every class's candidate (smaller
cluster, or input outlier mass on tabular data), flagged or not, ``tabular_`` says which
path ran, and ``class_stats_`` every measured statistic, for inspection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlwarden.core.contract import Capability
from mlwarden.core.errors import ParameterError
from mlwarden.core.seeding import make_generator
from mlwarden.defenses.detection._features import class_representations
from mlwarden.defenses.detection.spectral_signatures import (
    MIN_OUTLIERS,
    Z_THRESHOLD,
    robust_spectral_z,
)


def exclusion_reclassification(
    inputs: np.ndarray, labels: np.ndarray, members: np.ndarray, label: int, n_neighbors: int = 5
) -> float:
    """Share of ``members`` that a ``n_neighbors``-NN fitted on every other sample labels
    differently from ``label`` (Chen et al.'s exclusionary reclassification)."""
    moved = reclassified(inputs, labels, members, label, n_neighbors)
    return float(moved.mean()) if len(moved) else 0.0


def reclassified(
    inputs: np.ndarray, labels: np.ndarray, members: np.ndarray, label: int, n_neighbors: int = 5
) -> np.ndarray:
    """Per member: does a ``n_neighbors``-NN fitted on every other sample label it otherwise
    than ``label``? (All False when too few samples remain to fit it.)"""
    from sklearn.neighbors import KNeighborsClassifier

    rest = np.setdiff1d(np.arange(len(labels)), members)
    if len(members) == 0 or len(rest) < n_neighbors:
        return np.zeros(len(members), dtype=bool)
    flat = inputs.reshape(len(inputs), -1)
    knn = KNeighborsClassifier(n_neighbors=n_neighbors).fit(flat[rest], labels[rest])
    return knn.predict(flat[members]) != label


class ActivationClustering:
    """Per-class 2-means on PCA-reduced activations; flags a small cluster that passes the
    exclusionary-reclassification and trigger-persistence tests."""

    name = "activation_clustering"
    title = "activation clustering"
    requirements: tuple[Capability, ...] = (Capability.FEATURES,)
    """What the model must offer (`mlwarden.core.contract`): penultimate activations."""

    def __init__(
        self,
        n_components: int = 10,
        size_threshold: float = 0.35,
        silhouette_threshold: float = 0.15,
        reclass_threshold: float = 0.6,
        persistence_margin: float = 0.3,
        n_neighbors: int = 5,
        n_overlays: int = 8,
        layer: str | None = None,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.size_threshold = size_threshold
        self.silhouette_threshold = silhouette_threshold
        self.reclass_threshold = reclass_threshold
        self.persistence_margin = persistence_margin
        self.n_neighbors = n_neighbors
        self.n_overlays = n_overlays
        self.layer = layer
        self.batch_size = batch_size
        self.seed = seed

    def _validate(self) -> None:
        if self.n_components <= 0:
            raise ParameterError(f"n_components must be positive, got {self.n_components}")
        if not 0.0 < self.size_threshold < 0.5:
            raise ParameterError(f"size_threshold must be in (0, 0.5), got {self.size_threshold}")
        if not 0.0 < self.reclass_threshold <= 1.0:
            raise ParameterError(
                f"reclass_threshold must be in (0, 1], got {self.reclass_threshold}"
            )
        if not 0.0 <= self.persistence_margin < 1.0:
            raise ParameterError(
                f"persistence_margin must be in [0, 1), got {self.persistence_margin}"
            )
        if self.n_neighbors <= 0 or self.n_overlays <= 0:
            raise ParameterError(
                f"n_neighbors and n_overlays must be positive, got {self.n_neighbors} "
                f"and {self.n_overlays}"
            )

    def fit(self, classifier: Any, x: torch.Tensor, y: torch.Tensor) -> ActivationClustering:
        """Cluster and test each class; sets ``suspicious_`` (N,), ``poisoned_classes_``,
        ``class_stats_`` and ``clusters_``."""
        self._validate()
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        feats, self.layer_ = class_representations(classifier, x, y, self.layer, self.batch_size)
        x, y = x.detach().cpu(), y.cpu()
        inputs, labels = x.numpy(), y.numpy()
        gen = make_generator(self.seed)
        suspicious = torch.zeros(len(x), dtype=torch.bool)
        stats: dict[int, dict[str, float]] = {}
        poisoned: list[int] = []
        clusters: dict[int, torch.Tensor] = {}
        tabular = x.dim() == 2
        if tabular:  # features on their own scales: the k-NN compares standardised ones
            scaled = (inputs - inputs.mean(0)) / np.maximum(inputs.std(0), 1e-12)
        for cls in torch.unique(y).tolist():
            idx = torch.nonzero(y == cls).flatten()
            if len(idx) < 2 * self.n_components:
                continue
            if tabular:
                members, stats[cls], flagged = self._tabular_class(inputs, scaled, labels, idx, cls)
                clusters[cls] = idx[members]
                if flagged.any():
                    poisoned.append(cls)
                    suspicious[idx[members][torch.from_numpy(flagged)]] = True
                continue
            acts = feats[idx].numpy().astype(np.float64)
            acts = acts[:, acts.std(0) > 1e-8]  # dead units carry nothing
            dims = min(self.n_components, acts.shape[1], len(idx) - 1)
            if dims < 1:
                continue
            reduced = PCA(n_components=dims, random_state=self.seed).fit_transform(acts)
            km = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
            counts = np.bincount(km, minlength=2)
            small = int(np.argmin(counts))
            rel = float(counts[small] / len(idx))
            sil = float(silhouette_score(reduced, km)) if counts.min() > 1 else 0.0
            members = idx[torch.from_numpy(km == small)]
            main = idx[torch.from_numpy(km != small)]
            clusters[cls] = members
            stat = {"relative_size": rel, "silhouette": sil}
            if rel < self.size_threshold and sil > self.silhouette_threshold:
                stat["reclassification"] = exclusion_reclassification(
                    inputs, labels, members.numpy(), cls, self.n_neighbors
                )
                others = torch.nonzero(y != cls).flatten()
                stat["persistence"] = self._persistence(classifier, x, members, others, cls, gen)
                stat["persistence_main"] = self._persistence(classifier, x, main, others, cls, gen)
                if (
                    stat["reclassification"] >= self.reclass_threshold
                    and stat["persistence"] - stat["persistence_main"] >= self.persistence_margin
                ):
                    poisoned.append(cls)
                    suspicious[members] = True
            stats[cls] = stat
        self.tabular_ = tabular
        self.class_stats_ = stats
        self.clusters_ = clusters
        self.poisoned_classes_ = poisoned
        self.suspicious_ = suspicious
        return self

    def _tabular_class(
        self,
        inputs: np.ndarray,
        scaled: np.ndarray,
        labels: np.ndarray,
        idx: torch.Tensor,
        cls: int,
    ) -> tuple[torch.Tensor, dict[str, float], np.ndarray]:
        """Candidate (positions in ``idx``: the robustly whitened input outlier mass), its
        statistics and, per candidate, whether it is reported (reclassified by the k-NN on
        the standardised ``scaled`` inputs, and the candidate as a whole passed test 1)."""
        z = robust_spectral_z(inputs[idx.numpy()], self.n_components, self.seed)
        members = torch.from_numpy(np.nonzero(z > Z_THRESHOLD)[0])
        stat = {"relative_size": len(members) / len(idx)}
        flagged = np.zeros(len(members), dtype=bool)
        if MIN_OUTLIERS <= len(members) < self.size_threshold * len(idx):
            moved = reclassified(scaled, labels, idx[members].numpy(), cls, self.n_neighbors)
            stat["reclassification"] = float(moved.mean())
            if stat["reclassification"] >= self.reclass_threshold:
                flagged = moved
        return members, stat, flagged

    def _persistence(
        self,
        classifier: Any,
        x: torch.Tensor,
        members: torch.Tensor,
        others: torch.Tensor,
        cls: int,
        gen: torch.Generator,
        max_members: int = 200,
    ) -> float:
        """Share of superimpositions (member + another class's sample, saturating at the upper
        bound) that the model still labels ``cls``."""
        if len(members) > max_members:
            members = members[torch.randperm(len(members), generator=gen)[:max_members]]
        low, high = classifier.spec.bounds
        picks = others[torch.randint(len(others), (len(members), self.n_overlays), generator=gen)]
        mixed = (x[members][:, None] + (x[picks] - low)).clamp(low, high)
        preds = classifier.predict(mixed.reshape(-1, *x.shape[1:]), batch_size=self.batch_size)
        return float((preds.cpu() == cls).float().mean())

    def suspicious_indices(self) -> torch.Tensor:
        return torch.nonzero(self.suspicious_).flatten()
