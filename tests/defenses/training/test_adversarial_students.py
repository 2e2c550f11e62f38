"""Transfer strategies ``adversarial`` and ``trades``: robust students from a teacher, and
the transfer audit shows their robust accuracy beside the clean one."""

from __future__ import annotations

import pytest

from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Report
from mlwarden.defenses.training.finetune import train_student
from mlwarden.evaluation.transfer import (
    ROBUST_TABLE,
    TransferSettings,
    audit_transfer,
    transfer_report,
)
from mlwarden.io.dataset import Dataset


@pytest.fixture(scope="module")
def small_digits(digits) -> Dataset:
    return digits.take(500)


def test_adversarial_student_is_more_robust_and_the_audit_says_so(digits_cnn, small_digits):
    test, train = small_digits.split(0.3, seed=0)
    reports = {}
    for strategy in ("full", "adversarial"):
        student = train_student(
            digits_cnn, train.x, train.y, strategy=strategy, epochs=4, adv_eps=0.15
        )
        audit = audit_transfer(
            digits_cnn, student.classifier, test.x, test.y, eps=0.15, max_samples=100
        )
        reports[strategy] = transfer_report(audit, strategy=strategy, report=Report(title="t"))
    full, adv = (reports[s].metrics for s in ("full", "adversarial"))
    assert adv["transfer.robust_accuracy"] > full["transfer.robust_accuracy"] + 0.1
    table = next(t for t in reports["adversarial"].tables if t.id == ROBUST_TABLE)
    assert table.columns == ["strategy", "clean accuracy", "robust accuracy"]
    assert table.rows[0][0] == "adversarial"
    assert table.rows[0][2] == adv["transfer.robust_accuracy"]


def test_trades_student_trains_and_text_refuses_the_tensor_strategies(digits_cnn, small_digits):
    from mlwarden.defenses.training.text_students import STRATEGIES as TEXT

    res = train_student(digits_cnn, small_digits.x[:300], small_digits.y[:300],
                        strategy="trades", epochs=1, adv_eps=0.05)
    assert res.details["method"] == "trades" and res.details["eps"] == 0.05
    assert res.classifier.accuracy(small_digits.x[300:], small_digits.y[300:]) > 0.8
    assert "adversarial" not in TEXT and "trades" not in TEXT
    with pytest.raises(ParameterError, match="strategy"):
        train_student(digits_cnn, small_digits.x, small_digits.y, strategy="freelb")


def test_the_settings_accept_the_new_strategies():
    assert TransferSettings(strategy="adversarial").strategy == "adversarial"
    assert TransferSettings(strategy="trades").strategy == "trades"
    with pytest.raises(ValueError, match="adversarial, trades, freelb, trigger_prune or compare"):
        TransferSettings(strategy="madry")
