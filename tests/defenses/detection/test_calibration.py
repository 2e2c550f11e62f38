"""The graded, calibrated verdict of the model-level backdoor scan (issue #21).

Severity logic on constructed trigger sizes (every statistic chosen relative to the
recorded cuts, so the tests follow a re-calibration), and the calibrated default on
the conftest zoo: clean models are not flagged, backdoored ones are, with their target.
"""

from __future__ import annotations

import math

import pytest
import torch

from mlwarden.core.findings import Severity
from mlwarden.defenses.detection import backdoor_report, verdict
from mlwarden.defenses.detection.anomaly import anomaly_index
from mlwarden.defenses.detection.calibration import (
    CUTS,
    FAR_FACTOR,
    JOINT,
    WEAK_BAND,
    assess,
    size_ratios,
)
from mlwarden.defenses.detection.result import BackdoorScan

NAMES = [str(i) for i in range(10)]
NC, UAP = "neural_cleanse", "universal_perturbation"


def _scan(
    method: str,
    ratio: float = 1.0,
    target: int = 3,
    *,
    threshold: float | None = None,
    converged: bool = True,
) -> BackdoorScan:
    """A scan whose class ``target`` has a trigger ``ratio`` times smaller than the median."""
    sizes = torch.tensor([10.0, 10.5, 9.5, 10.0, 10.2, 9.8, 10.0, 10.4, 9.6, 10.0])
    sizes[target] = 10.0 / ratio
    return BackdoorScan(
        method=method,
        classes=list(range(10)),
        sizes=sizes,
        success=torch.ones(10) if converged else torch.full((10,), 0.5),
        anomaly_index=anomaly_index(sizes),
        threshold=threshold,
        converged=converged,
    )


def _cut(name: str) -> float:
    return CUTS[name].cut


def test_cuts_sit_above_the_largest_clean_value_with_zero_calibration_false_positives() -> None:
    for name in (NC, UAP, JOINT):
        cut = CUTS[name]
        assert cut.cut > cut.largest_clean > 1.0
        assert cut.false_positives == 0 and cut.models >= 10


def test_size_ratio_is_median_over_size() -> None:
    ratios = size_ratios(torch.tensor([1.0, 2.0, 4.0, 4.0, 8.0]))
    assert ratios.tolist() == pytest.approx([4.0, 2.0, 1.0, 1.0, 0.5])


def test_nothing_anomalous_is_info_and_not_detected() -> None:
    scans = [_scan(NC, 1.05), _scan(UAP, 1.05)]
    assessment = assess(scans)
    assert assessment.severity is Severity.INFO and assessment.target is None
    report = backdoor_report(scans, NAMES)
    assert [f.id for f in report.findings] == ["MLW-BKD-000"]
    assert verdict(scans)[:2] == (False, None)


def test_a_statistic_just_under_its_cut_is_a_low_weak_anomaly() -> None:
    ratio = _cut(NC) * (1 - WEAK_BAND / 2)
    scans = [_scan(NC, ratio, target=6), _scan(UAP, 1.0, target=6)]
    assessment = assess(scans)
    assert assessment.severity is Severity.LOW and assessment.target == 6
    finding = backdoor_report(scans, NAMES).findings[0]
    assert finding.id == "MLW-BKD-002" and finding.severity is Severity.LOW
    assert "not conclusive" in finding.title
    assert verdict(scans)[0] is False


def test_one_method_over_its_cut_alone_is_medium() -> None:
    ratio = _cut(UAP) * 1.1  # over, not far over
    assert ratio < FAR_FACTOR * _cut(UAP)
    scans = [_scan(NC, 1.0, target=2), _scan(UAP, ratio, target=5)]
    assessment = assess(scans)
    assert assessment.severity is Severity.MEDIUM and assessment.target == 5
    report = backdoor_report(scans, NAMES)
    finding = report.findings[0]
    assert finding.id == "MLW-BKD-001" and finding.severity is Severity.MEDIUM
    assert "Only universal_perturbation is over its cut" in finding.detail
    stats = finding.evidence["statistics"]
    assert stats[UAP]["cut"] == pytest.approx(_cut(UAP))
    assert stats[UAP]["false_positive_rate"] == 0.0
    assert "clean models over the cut" in stats[UAP]["calibration"]
    assert report.metrics["backdoor.target_class"] == 5
    assert verdict(scans)[:2] == (True, 5)


def test_both_methods_agreeing_on_a_class_is_high() -> None:
    scans = [_scan(NC, _cut(NC) * 1.05, target=4), _scan(UAP, _cut(UAP) * 1.05, target=4)]
    assessment = assess(scans)
    assert assessment.severity is Severity.HIGH and assessment.target == 4
    finding = backdoor_report(scans, NAMES).findings[0]
    assert finding.severity is Severity.HIGH and finding.title.startswith("Backdoor suspected")


def test_methods_over_their_cuts_on_different_classes_are_not_agreement() -> None:
    scans = [_scan(NC, _cut(NC) * 1.05, target=4), _scan(UAP, _cut(UAP) * 1.05, target=8)]
    assert assess(scans).severity is Severity.MEDIUM


def test_one_method_far_over_its_cut_is_high() -> None:
    scans = [_scan(NC, _cut(NC) * FAR_FACTOR * 1.01, target=1), _scan(UAP, 1.0, target=7)]
    assessment = assess(scans)
    assert assessment.severity is Severity.HIGH and assessment.target == 1


def test_a_detector_that_did_not_converge_makes_the_scan_inconclusive() -> None:
    scans = [_scan(NC, 1.0), _scan(UAP, 1.0, converged=False)]
    assert assess(scans).severity is Severity.MEDIUM
    report = backdoor_report(scans, NAMES)
    finding = report.findings[0]
    assert finding.id == "MLW-BKD-003" and finding.severity is Severity.MEDIUM
    assert finding.evidence["not_converged"] == [UAP]
    assert report.metrics["backdoor.detected"] == 0


def test_a_detector_that_failed_is_reported_not_cleared() -> None:
    report = backdoor_report([_scan(NC, 1.0)], NAMES, failures={UAP: "RuntimeError: nan"})
    finding = report.findings[0]
    assert finding.id == "MLW-BKD-003" and "RuntimeError: nan" in finding.detail
    only_failures = backdoor_report([], NAMES, failures={NC: "RuntimeError: x"})
    assert [f.id for f in only_failures.findings] == ["MLW-BKD-003"]


def test_an_explicit_threshold_grades_the_anomaly_index() -> None:
    # ratio 1.5 is under every calibrated cut, but its MAD anomaly index is far above 2
    scans = [_scan(NC, 1.5, target=9, threshold=2.0), _scan(UAP, 1.0, threshold=2.0)]
    assert scans[0].flagged == [9]
    assessment = assess(scans)
    assert assessment.severity >= Severity.MEDIUM and assessment.target == 9
    stats = backdoor_report(scans, NAMES).findings[0].evidence["statistics"]
    assert stats[NC]["calibrated"] is False and "false_positive_rate" not in stats[NC]
    assert JOINT not in stats  # the joint cut is calibrated only for the calibrated ratios


def test_calibrated_default_on_the_zoo(zoo, zoo_scans) -> None:
    for name, model in zoo.items():
        report = backdoor_report(zoo_scans[name], NAMES)
        worst = max(f.severity for f in report.findings)
        if model.attack is None:
            assert worst < Severity.MEDIUM, f"{name}: {report.findings[0].title}"
        else:
            assert worst >= Severity.MEDIUM, f"{name}: {report.findings[0].title}"
            assert report.metrics["backdoor.target_class"] == model.target, name


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory, digits_split):
    """The demo's teacher and student, trained by `mlwarden.demo` itself, and its test data."""
    import numpy as np

    from mlwarden.core.progress import null_progress
    from mlwarden.demo import _train_models

    root = tmp_path_factory.mktemp("demo-models")
    _train_models(root, null_progress)
    _, test = digits_split  # the split `mlwarden demo` writes to data/test.npz
    np.savez(root / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    return root


@pytest.mark.slow
def test_cli_detect_with_defaults_clears_the_clean_demo_student(demo_files) -> None:
    """Issue #21: the clean demo student was reported HIGH "Backdoor suspected: class '2'"."""
    import json

    from mlwarden.cli.main import run

    out = demo_files / "student.json"
    argv = ["backdoor", "detect", "--model", str(demo_files / "student.pt2")]
    argv += ["--data", str(demo_files / "test.npz"), "--no-progress", "-f", "json", "-o", str(out)]
    with pytest.raises(SystemExit) as exc:
        run(argv)
    report = json.loads(out.read_text())
    severities = [Severity(f["severity"]) for f in report["findings"]]
    assert max(severities) < Severity.MEDIUM, report["findings"][0]["title"]
    assert exc.value.code == 0
    assert report["subject"]["threshold"] == "calibrated"
    assert report["metrics"]["backdoor.detected"] == 0


def test_inheritance_margins_follow_the_detector_rule_and_are_the_ones_in_use() -> None:
    from mlwarden.defenses.detection.calibration import FAR_FACTOR, INHERITANCE, MARGIN
    from mlwarden.evaluation import transfer

    cut = INHERITANCE
    assert cut.medium == math.ceil(cut.largest_clean * (1 + MARGIN) * 100) / 100
    assert cut.high == math.ceil(FAR_FACTOR * cut.medium * 100) / 100
    assert cut.false_positives == 0 and cut.largest_clean < cut.medium < cut.high
    assert (transfer.INHERITANCE_MARGIN, transfer.INHERITANCE_HIGH) == (cut.medium, cut.high)
