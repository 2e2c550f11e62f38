"""Student strategies: what each one trains, and training from a .pt2 teacher."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.defenses.training.finetune import train_student


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_linear_probe_trains_only_the_head(digits_cnn, digits_split) -> None:
    train, _ = digits_split
    res = train_student(digits_cnn, train.x[:300], train.y[:300], strategy="linear_probe", epochs=2)
    s, t = res.classifier.module, digits_cnn.module
    assert _same(s.features, t.features) and _same(s.embedding, t.embedding)
    assert not _same(s.head, t.head)
    assert res.trainable_parameters == sum(p.numel() for p in t.head.parameters())


def test_last_k_and_full_reinit(digits_cnn, digits_split) -> None:
    train, _ = digits_split
    res = train_student(digits_cnn, train.x[:300], train.y[:300], strategy="last_k", k=2, epochs=2)
    s, t = res.classifier.module, digits_cnn.module
    assert _same(s.features, t.features) and not _same(s.embedding, t.embedding)
    res = train_student(digits_cnn, train.x[:300], train.y[:300], strategy="full_reinit", epochs=2)
    assert not _same(res.classifier.module.features, t.features)
    assert res.details["reinitialised"] == "head"
    with pytest.raises(ParameterError, match="k must be"):
        train_student(digits_cnn, train.x, train.y, strategy="last_k", k=7)
    with pytest.raises(ParameterError, match="strategy"):
        train_student(digits_cnn, train.x, train.y, strategy="bogus")
    ones = train.y == 1
    with pytest.raises(DataError, match="single class"):
        train_student(digits_cnn, train.x[ones], train.y[ones])


def test_student_from_a_pt2_teacher(digits_cnn, digits_split, tmp_path) -> None:
    from mlwarden.io.export import save_pt2
    from mlwarden.io.models import load_model

    train, test = digits_split
    path = save_pt2(digits_cnn, tmp_path / "teacher.pt2")
    teacher = load_model(path, device="cpu")
    before = teacher.accuracy(test.x, test.y)
    res = train_student(teacher, train.x, train.y, strategy="full_reinit", epochs=3)
    assert res.classifier.accuracy(test.x, test.y) > 0.85
    assert teacher.accuracy(test.x, test.y) == before, "the teacher must not change"
    probe = train_student(teacher, train.x[:200], train.y[:200], strategy="linear_probe", epochs=1)
    assert probe.trainable_parameters < sum(p.numel() for p in teacher.parameters())


def test_dp_strategy_trains_a_private_student(digits_cnn, digits_split):
    from mlwarden.defenses.training.finetune import train_student

    train, test = digits_split
    res = train_student(digits_cnn, train.x[:600], train.y[:600], strategy="dp",
                        target_epsilon=4.0, epochs=15, lr=3e-3, seed=0)
    assert res.details["epsilon"] <= 4.0 + 1e-6
    assert res.details["reinitialised"] == "head"
    assert res.classifier.accuracy(test.x, test.y) > 0.7  # features kept from the teacher
    assert digits_cnn.accuracy(test.x, test.y) > 0.93  # the teacher is untouched
