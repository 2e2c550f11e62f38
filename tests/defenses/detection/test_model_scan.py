"""Model-level detection on the zoo: finds each backdoor and its target, flags no clean model."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import DataError
from mlwarden.core.findings import Report
from mlwarden.defenses.detection import (
    NeuralCleanse,
    UniversalPerturbation,
    backdoor_report,
    verdict,
)
from mlwarden.defenses.detection.anomaly import anomaly_index


def test_confusion_table_over_the_zoo(zoo, zoo_scans, capsys) -> None:
    rows, confusion = [], {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for name, model in zoo.items():
        detected, target, top = verdict(zoo_scans[name])
        backdoored = model.attack is not None
        key = ("tp" if detected else "fn") if backdoored else ("fp" if detected else "tn")
        confusion[key] += 1
        rows.append((name, backdoored, detected, model.target, target, round(top, 2)))
    with capsys.disabled():
        print("\nmodel | backdoored | detected | true target | found target | max anomaly index")
        for row in rows:
            print(" | ".join(map(str, row)))
        print("confusion:", confusion)
    for name, backdoored, detected, true_target, found, _ in rows:
        assert detected == backdoored, f"{name}: detected={detected}"
        if backdoored:
            assert found == true_target, f"{name}: suspected {found}, planted {true_target}"


def test_reverse_engineered_mask_sits_on_the_planted_patch(zoo_scans) -> None:
    nc = next(
        s for s in zoo_scans["badnets-3x3-checker-bottomright-t0"] if s.method == "neural_cleanse"
    )
    mask = nc.triggers["mask"][0, 0]  # class 0, (H, W)
    assert float(mask[5:, 5:].sum() / mask.sum()) > 0.6
    nc7 = next(s for s in zoo_scans["badnets-2x2-solid-topleft-t7"] if s.method == "neural_cleanse")
    mask7 = nc7.triggers["mask"][7, 0]
    assert float(mask7[:3, :3].sum() / mask7.sum()) > 0.6


def test_report_carries_verdict_table_and_trigger_images(zoo_scans, digits_spec) -> None:
    report = backdoor_report(
        zoo_scans["badnets-3x3-checker-bottomright-t0"], digits_spec.class_names
    )
    assert report.metrics["backdoor.target_class"] == 0
    assert report.metrics["backdoor.anomaly_index"] > 2
    finding = next(f for f in report.findings if f.id == "MLW-BKD-001")
    assert finding.severity.value == "high" and "AML.T0018.000" in finding.atlas
    table = next(t for t in report.tables if t.id == "backdoor-anomaly-index")
    assert len(table.rows) == 10
    figures = {f.id: f for f in report.figures}
    mask_fig = figures["backdoor-neural_cleanse-mask"]
    assert mask_fig.kind == "images" and len(mask_fig.images) == 10
    assert len(mask_fig.images[0].pixels) == 8 and len(mask_fig.images[0].pixels[0]) == 8
    assert mask_fig.images[0].label.startswith("0*")
    assert Report.from_json(report.to_json()).metrics == report.metrics
    clean = backdoor_report(zoo_scans["clean-fixture"], digits_spec.class_names)
    assert clean.metrics["backdoor.target_class"] is None
    assert [f.id for f in clean.findings] == ["MLW-BKD-000"]


def test_anomaly_index_matches_the_paper_definition() -> None:
    sizes = torch.tensor([10.0, 11.0, 9.0, 10.5, 2.0, 9.5, 10.0, 11.5, 9.0, 10.0])
    idx = anomaly_index(sizes)
    median = 10.0
    mad = 1.4826 * float((sizes - median).abs().median())  # numpy-style median below
    mad = 1.4826 * float((sizes - median).abs().quantile(0.5))
    assert idx[4] == pytest.approx((median - 2.0) / mad, rel=1e-4)
    assert idx[1] < 0
    assert torch.all(anomaly_index(torch.full((5,), 3.0)) == 0)


def test_scan_is_deterministic_for_a_seed(digits_cnn, digits_split) -> None:
    _, test = digits_split
    a = NeuralCleanse(steps=20, batch_size=16, seed=3).scan(digits_cnn, test.x[:64], test.y[:64])
    b = NeuralCleanse(steps=20, batch_size=16, seed=3).scan(digits_cnn, test.x[:64], test.y[:64])
    assert torch.equal(a.sizes, b.sizes)


def test_bad_clean_sets_get_clear_errors(digits_cnn, digits_split, cancer_split) -> None:
    _, test = digits_split
    ones = test.y == 1
    with pytest.raises(DataError, match="single class"):
        NeuralCleanse(steps=5).scan(digits_cnn, test.x[ones], test.y[ones])
    cancer_train, _ = cancer_split
    with pytest.raises(DataError, match="shape"):
        UniversalPerturbation(steps=5).scan(digits_cnn, cancer_train.x, cancer_train.y)
    with pytest.raises(DataError, match="outside the input bounds"):
        NeuralCleanse(steps=5).scan(digits_cnn, test.x * 3, test.y)


def test_works_on_a_model_without_convolution(digits_mlp, digits_split) -> None:
    _, test = digits_split
    scan = NeuralCleanse(steps=30, batch_size=16).scan(digits_mlp, test.x[:100], test.y[:100])
    assert scan.sizes.shape == (10,) and torch.isfinite(scan.anomaly_index).all()
