"""The transfer-learning backdoor experiment on digits, and the transfer audit's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.attacks.poisoning import BadNets, attack_success_rate
from mlwarden.core import Classifier
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.findings import Report
from mlwarden.core.training import fit
from mlwarden.defenses.training.finetune import train_student
from mlwarden.evaluation.transfer import (
    COMPARE_COLUMNS,
    NOT_MEASURED,
    TransferSettings,
    adversarial_transfer_rate,
    audit_transfer,
    inherits_backdoor,
    linear_cka,
    recommendation,
    reference_model,
    run_transfer,
    transfer_report,
    trigger_from_file,
    weight_divergence,
)
from mlwarden.models import SmallCNN


@pytest.fixture(scope="module")
def experiment(digits_split, digits_spec):
    """Teacher poisoned (BadNets, target 0) on one half of train; the student's clean data is
    the other."""
    train, test = digits_split
    teacher_part, student_part = train.split(0.5, seed=1)
    attack = BadNets(target=0, rate=0.1, size=3)
    torch.manual_seed(0)
    module = SmallCNN()
    poisoned = attack.poison(teacher_part).data
    fit(module, poisoned.x, poisoned.y, epochs=20, lr=2e-3, seed=0)
    teacher = Classifier(module, digits_spec, name="teacher")
    return teacher, attack, student_part, test


def test_classic_transfer_backdoor_experiment(experiment, capsys) -> None:
    teacher, attack, student_data, test = experiment
    teacher_asr = attack_success_rate(teacher, test.x, test.y, attack.trigger, 0)
    teacher_acc = teacher.accuracy(test.x, test.y)
    results = {}
    for strategy in ("linear_probe", "full", "full_reinit"):
        student = train_student(
            teacher, student_data.x, student_data.y, strategy=strategy, epochs=10
        ).classifier
        results[strategy] = (
            student.accuracy(test.x, test.y),
            attack_success_rate(student, test.x, test.y, attack.trigger, 0),
        )
    with capsys.disabled():
        print(f"\nteacher: accuracy {teacher_acc:.3f}, ASR {teacher_asr:.3f}")
        for strategy, (acc, asr) in results.items():
            print(f"{strategy}: accuracy {acc:.3f}, ASR {asr:.3f}")
    assert teacher_asr > 0.9
    assert results["linear_probe"][1] > 0.7, "a linear probe keeps the teacher's backdoor"
    acc, asr = results["full_reinit"]
    assert asr < 0.3, "full fine-tuning from a fresh head removes most of the backdoor"
    assert acc > teacher_acc - 0.05


def test_transfer_audit_measures_all_three(experiment) -> None:
    teacher, attack, student_data, test = experiment
    probe = train_student(
        teacher, student_data.x, student_data.y, strategy="linear_probe", epochs=10
    ).classifier
    audit = audit_transfer(
        teacher, probe, test.x, test.y, trigger=attack.trigger, target=0, eps=0.1, pgd_steps=10
    )
    assert audit.trigger_source == "given"
    assert audit.student_asr > 0.7 and audit.clean_rate < 0.1
    assert audit.reference_asr is None and audit.baseline_asr == audit.clean_rate, (
        "without a reference the baseline is the clean rate"
    )
    assert audit.excess_asr == pytest.approx(audit.student_asr - audit.clean_rate)
    assert inherits_backdoor(audit)
    assert 0.0 <= audit.adversarial_transfer_rate <= 1.0
    assert "fool the teacher" in audit.adversarial_transfer_reason
    assert audit.adversarial_transfer_rate > 0.2, "a probe shares the teacher's features"
    assert 0.0 < audit.weight_divergence < 1.0
    assert audit.feature_divergence == pytest.approx(0.0, abs=1e-6), (
        "frozen features cannot diverge"
    )
    report = transfer_report(audit, strategy="linear_probe")
    assert report.metrics["transfer.asr"] == pytest.approx(audit.student_asr, abs=1e-4)
    ids = [f.id for f in report.findings]
    assert "MLW-BKD-030" in ids and "MLW-BKD-032" in ids
    assert "ML07" in next(f for f in report.findings if f.id == "MLW-BKD-030").owasp


def test_divergence_measures() -> None:
    a = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    rot = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))[0]
    assert linear_cka(a, a @ rot * 3.0) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(a, torch.randn(50, 8, generator=torch.Generator().manual_seed(2))) < 0.5
    m = SmallCNN()
    assert weight_divergence(m, m) == 0.0


def test_audit_input_errors(experiment, cancer_split, cancer_mlp) -> None:
    teacher, attack, _, test = experiment
    with pytest.raises(DataError, match="disagree"):
        audit_transfer(teacher, cancer_mlp, test.x, test.y)
    with pytest.raises(ParameterError, match="both"):
        audit_transfer(teacher, teacher, test.x, test.y, trigger=attack.trigger)


# -- the baseline, the trigger sources, the comparison and the advice -------------------------
EPOCHS = 4  # students and references in these tests: seconds, enough for the figures to hold
SETTINGS = {"strategy": "compare", "epochs": EPOCHS, "samples": 200}


def _table(report: Report):
    return next(t for t in report.tables if t.id == "transfer-strategies")


@pytest.fixture(scope="module")
def backdoored_compare(experiment):
    """``compare`` from the BadNets teacher, its trigger found by the teacher scan."""
    teacher, _, student_data, _ = experiment
    report = Report()
    run = run_transfer(teacher, student_data, TransferSettings(**SETTINGS), report=report)
    return report, run


@pytest.fixture(scope="module")
def clean_compare(digits_cnn, digits_split):
    """``compare`` from a clean teacher (the suite's digits CNN)."""
    _, test = digits_split
    report = Report()
    run = run_transfer(digits_cnn, test, TransferSettings(**SETTINGS), report=report)
    return report, run


def test_a_clean_teacher_shows_no_inheritance_and_says_it_was_not_measured(clean_compare) -> None:
    report, run = clean_compare
    assert report.metrics["transfer.trigger_source"] == "none"
    assert "transfer.target_class" not in report.metrics, "no figure for what was not measured"
    assert not any(f.id == "MLW-BKD-030" for f in report.findings)
    note = next(f for f in report.findings if f.id == "MLW-BKD-034")
    assert note.severity.value == "info" and "flags no class" in note.detail
    table = _table(report)
    assert table.columns == COMPARE_COLUMNS
    assert [row[0] for row in table.rows] == list(run.audits), "no reference without a trigger"
    for row in table.rows:
        assert row[2:5] == [NOT_MEASURED] * 3, "no trigger: no ASR, and no guess"
        assert f"transfer.{row[0]}.asr" not in report.metrics
        assert all(isinstance(v, float) for v in [row[1], *row[5:]]), row
    advice = next(f for f in report.findings if f.id == "MLW-BKD-033")
    assert advice.severity.value == "info" and "no trigger is known" in advice.detail


def test_a_backdoored_teacher_fills_every_column_and_grades_the_excess(
    backdoored_compare,
) -> None:
    report, run = backdoored_compare
    assert report.metrics["transfer.trigger_source"].startswith("teacher scan")
    assert report.metrics["transfer.target_class"] == 0, "the planted target"
    table = _table(report)
    assert table.rows[-1][0].startswith("reference"), "the baseline's own row"
    assert len(table.rows) == len(run.audits) + 1
    for row in table.rows:
        assert len(row) == len(COMPARE_COLUMNS)
        assert all(isinstance(v, float) for v in row[1:]), row
    probe = run.audits["linear_probe"]
    assert probe.reference_asr is not None and probe.reference_accuracy > 0.8
    assert probe.teacher_asr > 0.5, "the scan's trigger works on the teacher it came from"
    assert probe.baseline_asr == max(probe.reference_asr, probe.clean_rate)
    assert probe.excess_asr == pytest.approx(probe.student_asr - probe.baseline_asr)
    found = {f.location: f for f in report.findings if f.id == "MLW-BKD-030"}
    assert found, "some strategy keeps the planted backdoor"
    evidence = next(iter(found.values())).evidence
    for key in ("student_asr", "baseline_asr", "reference_asr", "clean_rate", "excess_asr"):
        assert evidence[key] is not None, key
    for strategy, audit in run.audits.items():
        assert (f"student ({strategy})" in found) == inherits_backdoor(audit)


def test_advice_never_recommends_the_strategy_that_produced_the_finding(
    backdoored_compare,
) -> None:
    report, run = backdoored_compare
    best = report.metrics["transfer.recommended_strategy"]
    inheriting = [s for s, a in run.audits.items() if inherits_backdoor(a)]
    assert inheriting and best not in inheriting
    for f in report.findings:
        if f.id == "MLW-BKD-030":
            strategy = f.location.removeprefix("student (").removesuffix(")")
            assert f"strategy '{strategy}'" not in f.detail.split("Do not deploy")[-1]
            if best is not None:
                assert f"retrain with strategy '{best}'" in f.detail
    audit = run.audits[inheriting[0]]
    for strategy in ("full_reinit", "fineprune", "full"):
        advice = recommendation(audit, strategy)
        assert f"other than '{strategy}'" in advice
        assert "fineprune' or 'full_reinit" not in advice


def test_the_baseline_absorbs_a_trigger_that_moves_any_model(digits_cnn, digits_split) -> None:
    """A 'trigger' that paints a whole 3 over the input sends any model to class 3: graded on
    ASR minus the clean rate alone it would read as inherited; the reference from scratch
    shows it is not a backdoor."""
    from mlwarden.attacks.poisoning.triggers import MaskPatternTrigger

    train, test = digits_split
    three = train.x[train.y == 3][0]
    paint = MaskPatternTrigger(torch.ones_like(three), three)
    reference = reference_model(digits_cnn, train.x, train.y, epochs=EPOCHS, lr=2e-3)
    audit = audit_transfer(
        digits_cnn,
        digits_cnn,
        test.x,
        test.y,
        trigger=paint,
        target=3,
        reference=reference,
        pgd_steps=5,
        max_samples=200,
    )
    assert audit.student_asr - audit.clean_rate > 0.8, "the naive measure cries wolf"
    assert audit.reference_asr > 0.8 and audit.excess_asr < 0.2
    assert not inherits_backdoor(audit)
    report = transfer_report(audit, strategy="full")
    assert not any(f.id == "MLW-BKD-030" for f in report.findings)


def test_adversarial_transfer_is_zero_with_a_reason_when_nothing_fools_the_teacher(
    digits_cnn, digits_split
) -> None:
    _, test = digits_split
    x, y = test.x[:40], test.y[:40]
    tiny = adversarial_transfer_rate(digits_cnn, digits_cnn, x, y, eps=1e-9, steps=2, seed=0)
    assert tiny.rate == 0.0 and tiny.fooled_teacher == 0
    assert "fooled the teacher on none" in tiny.reason
    wrong = (digits_cnn.predict(x).cpu() + 1) % 10
    none = adversarial_transfer_rate(digits_cnn, digits_cnn, x, wrong, eps=0.1, steps=2, seed=0)
    assert none.rate == 0.0 and none.candidates == 0
    assert "classified correctly by both" in none.reason


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_trigger_file_is_loaded_and_checked(experiment, tmp_path) -> None:
    teacher, attack, _, test = experiment
    spec = teacher.spec
    mask, pattern = attack.trigger.mask_and_pattern(spec.shape, spec.bounds)
    good = _save(tmp_path / "t.npz", mask=mask.numpy(), pattern=pattern.numpy())
    known = trigger_from_file(good, 0, spec)
    assert known.source == "given" and known.target == 0
    assert attack_success_rate(teacher, test.x, test.y, known.trigger, 0) == pytest.approx(
        attack_success_rate(teacher, test.x, test.y, attack.trigger, 0)
    )
    small_mask = _save(tmp_path / "m.npz", mask=mask.numpy()[:, :4, :4], pattern=pattern.numpy())
    with pytest.raises(DataError, match="does not broadcast"):
        trigger_from_file(small_mask, 0, spec)
    np.save(tmp_path / "single.npy", pattern.numpy())
    bad = {
        "missing": (tmp_path / "nope.npz", InputError, "not found"),
        "not npz": (tmp_path / "single.npy", DataError, "not an .npz"),
        "no mask": (_save(tmp_path / "a.npz", pattern=pattern.numpy()), DataError, "lacks"),
        "shape": (
            _save(tmp_path / "b.npz", mask=mask.numpy(), pattern=np.zeros((1, 4, 4), "f4")),
            DataError,
            "pattern has shape",
        ),
        "mask range": (
            _save(tmp_path / "c.npz", mask=mask.numpy() * 2, pattern=pattern.numpy()),
            DataError,
            r"\[0, 1\]",
        ),
        "bounds": (
            _save(tmp_path / "d.npz", mask=mask.numpy(), pattern=pattern.numpy() + 5),
            DataError,
            "outside the model's input bounds",
        ),
        "nan": (
            _save(tmp_path / "e.npz", mask=mask.numpy() * np.nan, pattern=pattern.numpy()),
            DataError,
            "NaN",
        ),
        "zero": (
            _save(tmp_path / "f.npz", mask=mask.numpy() * 0, pattern=pattern.numpy()),
            DataError,
            "all zero",
        ),
    }
    for path, error, message in bad.values():
        with pytest.raises(error, match=message):
            trigger_from_file(path, 0, spec)
    with pytest.raises(ParameterError, match="0 to 9"):
        trigger_from_file(good, 10, spec)
    with pytest.raises(ValueError, match="together"):
        TransferSettings(trigger=str(good))


def _weak_scans(ratio_of_cut: float):
    """Both detectors' scans, Neural Cleanse's class 3 trigger ``ratio_of_cut`` x its cut
    smaller than the median (the other detector flat), with mask/pattern triggers."""
    from mlwarden.defenses.detection.anomaly import anomaly_index
    from mlwarden.defenses.detection.calibration import cut_for
    from mlwarden.defenses.detection.result import BackdoorScan

    scans = []
    for method, ratio in (
        ("neural_cleanse", ratio_of_cut * cut_for("neural_cleanse")),
        ("universal_perturbation", 1.0),
    ):
        sizes = torch.full((10,), 10.0)
        sizes[3] = 10.0 / ratio
        scans.append(
            BackdoorScan(
                method=method,
                classes=list(range(10)),
                sizes=sizes,
                success=torch.ones(10),
                anomaly_index=anomaly_index(sizes),
                threshold=None,
                triggers={"mask": torch.zeros(10, 1, 8, 8), "pattern": torch.ones(10, 1, 8, 8)},
            )
        )
    return scans


@pytest.mark.parametrize(("ratio_of_cut", "measured"), [(0.95, True), (0.5, False)])
def test_a_weak_teacher_anomaly_is_measured_as_a_candidate(
    digits_cnn, digits_split, monkeypatch, ratio_of_cut: float, measured: bool
) -> None:
    """A LOW scan (a statistic within the band below its cut) names a class whose trigger is
    measured against the baseline; a scan with nothing near a cut gives no trigger."""
    import mlwarden.defenses.detection.model_scan as model_scan
    from mlwarden.evaluation.transfer import teacher_trigger

    monkeypatch.setattr(model_scan, "run_backdoor_scan", lambda *a, **k: _weak_scans(ratio_of_cut))
    _, test = digits_split
    known = teacher_trigger(digits_cnn, test)
    assert known.known is measured
    if measured:
        assert known.target == 3
        assert known.source == "teacher scan (neural_cleanse, weak anomaly)"
        assert "below its cut" in known.note
    else:
        assert known.source == "none" and "no weak anomaly" in known.note
