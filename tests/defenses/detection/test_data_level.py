"""Data-level detection: the poisoned samples of a BadNets training set are found."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import DataError
from mlwarden.defenses.detection import ActivationClustering, SpectralSignatures
from mlwarden.defenses.detection.data_scan import data_report, scan_data


def _recall_precision(flags: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    tp = float((flags & truth).sum())
    return tp / float(truth.sum()), tp / max(float(flags.sum()), 1.0)


def test_activation_clustering_isolates_the_poison(badnets_model) -> None:
    poisoned = badnets_model.poisoned
    ac = ActivationClustering(seed=0).fit(
        badnets_model.classifier, poisoned.data.x, poisoned.data.y
    )
    cluster = ac.clusters_[badnets_model.target]
    # the smaller activation cluster of the target class is (almost) all poison
    assert float(poisoned.is_poison[cluster].float().mean()) > 0.9
    assert len(cluster) > 0.5 * int(poisoned.is_poison.sum())
    for cls, members in ac.clusters_.items():
        if cls != badnets_model.target:
            assert not bool(poisoned.is_poison[members].any())
    assert set(ac.class_stats_) == set(range(10))


def test_spectral_signatures_rank_poison_first(badnets_model) -> None:
    poisoned = badnets_model.poisoned
    # eps bounds the poisoned share of a class: here half of class 0 is poison
    ss = SpectralSignatures(eps=0.35).fit(
        badnets_model.classifier, poisoned.data.x, poisoned.data.y
    )
    target_rows = poisoned.data.y == badnets_model.target
    recall, _ = _recall_precision(ss.suspicious_ & target_rows, poisoned.is_poison)
    assert recall > 0.7, recall
    # poisoned samples score far above the clean samples of their label
    assert ss.scores_[poisoned.is_poison].median() > ss.scores_[
        target_rows & ~poisoned.is_poison
    ].quantile(0.9)


def test_data_report_lists_suspects(badnets_model, digits_spec) -> None:
    poisoned = badnets_model.poisoned
    results = scan_data(badnets_model.classifier, poisoned.data.x, poisoned.data.y, eps=0.35)
    report = data_report(results, digits_spec.class_names, max_listed=10_000)
    assert any(t.id == "backdoor-activation-clustering" for t in report.tables)
    f = next(f for f in report.findings if f.id == "MLW-BKD-011")
    listed = torch.tensor(f.evidence["indices"])
    assert f.evidence["count"] == len(results["spectral_signatures"].suspicious_indices())
    # the listed suspects hold most of the poison
    assert float(poisoned.is_poison[listed].sum()) > 0.7 * float(poisoned.is_poison.sum())


def test_single_class_training_set_is_refused(badnets_model) -> None:
    poisoned = badnets_model.poisoned
    only = poisoned.data.y == 3
    with pytest.raises(DataError, match="single class"):
        SpectralSignatures().fit(
            badnets_model.classifier, poisoned.data.x[only], poisoned.data.y[only]
        )
