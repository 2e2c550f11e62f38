"""The transfer-learning backdoor experiment on digits, and the transfer audit's numbers."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.poisoning import BadNets, attack_success_rate
from mlwarden.core import Classifier
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.training import fit
from mlwarden.defenses.training.finetune import train_student
from mlwarden.evaluation.transfer import (
    audit_transfer,
    inherits_backdoor,
    linear_cka,
    transfer_report,
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
    assert inherits_backdoor(audit)
    assert 0.0 <= audit.adversarial_transfer_rate <= 1.0
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
