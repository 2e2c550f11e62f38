"""The data scan on tabular data: 5%-BadNets breast_cancer (a run of 3 features set to
1, 0, 1) was missed entirely (recall 0) before the input outlier-mass path; a clean copy
must still draw nothing at or above medium (issue #21)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.attacks.poisoning import BadNets
from mlwarden.core import Classifier
from mlwarden.core.findings import Severity
from mlwarden.core.training import fit
from mlwarden.defenses.detection.data_scan import data_report, scan_data
from mlwarden.defenses.detection.spectral_signatures import robust_spectral_z
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.models import MLP

SEVERE = (Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


def _mlp(data: Dataset) -> Classifier:
    """What a user trains on breast_cancer (as benchmarks/data_scan_eval.py)."""
    torch.manual_seed(0)
    module = MLP(30, 2, (64, 64))
    fit(module, data.x, data.y, seed=0, epochs=60, lr=3e-3, batch_size=32)
    return Classifier(module, data.spec(), name="bc-mlp")


@pytest.fixture(scope="module")
def bc_train() -> Dataset:
    train, _ = load_builtin("breast_cancer").split(0.7, seed=0)
    return train


@pytest.fixture(scope="module", params=[0, 1], ids=["to-malignant", "to-benign"])
def bc_poisoned(request, bc_train):
    poisoned = BadNets(target=request.param, rate=0.05, size=3).poison(bc_train)
    data = poisoned.data
    return poisoned, data_report(scan_data(_mlp(data), data.x, data.y), data.class_names)


def test_clean_breast_cancer_draws_no_alarm(bc_train) -> None:
    results = scan_data(_mlp(bc_train), bc_train.x, bc_train.y)
    report = data_report(results, bc_train.class_names)
    assert [f.id for f in report.findings if f.severity in SEVERE] == []
    ac = results["activation_clustering"]
    assert ac.tabular_ and ac.poisoned_classes_ == []
    # clean outliers exist (tabular data has extreme cases) but keep their label
    assert all(s["relative_size"] > 0 for s in ac.class_stats_.values())
    assert all(s.get("reclassification", 0.0) < 0.4 for s in ac.class_stats_.values())


def test_tabular_badnets_poison_is_found(bc_poisoned) -> None:
    poisoned, report = bc_poisoned
    finding = next(f for f in report.findings if f.id == "MLW-BKD-010")
    assert finding.severity is Severity.HIGH
    assert finding.evidence["classes"] == [poisoned.target]
    listed = set(finding.evidence["indices"])
    truth = set(poisoned.poison_index.tolist())
    # measured recall 0.90 and 0.95, precision 1.00 (benchmarks/data_scan_eval.py)
    assert len(listed & truth) / len(truth) >= 0.5
    assert len(listed & truth) / len(listed) >= 0.9


def test_robust_whitening_exposes_a_shared_deviation() -> None:
    gen = np.random.default_rng(0)
    mixing = gen.normal(size=(6, 6))
    rows = gen.normal(size=(200, 6)) @ mixing * [10, 5, 1, 1, 1, 1]
    rows[:12, 2] += 6.0  # a small group shifted along a low-variance direction
    z = robust_spectral_z(rows, n_components=6)
    assert (z[:12] > 4).mean() > 0.8 and (z[12:] > 4).mean() < 0.05
    assert not robust_spectral_z(np.ones((20, 4))).any()  # no direction: no outliers
