"""Poisoning attacks: what they change, at what rate, and that the backdoor works."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.poisoning import (
    BadNets,
    Blended,
    CleanLabel,
    attack_success_rate,
    backdoor_metrics,
)
from mlwarden.core import Classifier
from mlwarden.core.errors import ParameterError
from mlwarden.core.training import fit
from mlwarden.models import SmallCNN


def test_badnets_poisons_rate_relabels_and_keeps_original(digits_split) -> None:
    train, _ = digits_split
    before = train.x.clone()
    res = BadNets(target=2, rate=0.1, size=2, position="top-left", seed=5).poison(train)
    assert len(res.poison_index) == round(0.1 * len(train))
    assert torch.all(res.data.y[res.poison_index] == 2)
    assert torch.all(train.y[res.poison_index] != 2), "only non-target samples are relabelled"
    assert torch.all(
        res.data.x[res.poison_index][:, 0, :2, :2] == torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    )
    clean = ~res.is_poison
    assert torch.equal(res.data.x[clean], train.x[clean]) and torch.equal(
        res.data.y[clean], train.y[clean]
    )
    assert torch.equal(train.x, before), "the input data set must not change"
    again = BadNets(target=2, rate=0.1, size=2, position="top-left", seed=5).poison(train)
    assert torch.equal(again.poison_index, res.poison_index)
    other = BadNets(target=2, rate=0.1, size=2, position="top-left", seed=6).poison(train)
    assert not torch.equal(other.poison_index, res.poison_index)


def test_blended_changes_every_pixel_of_poisoned_samples(digits_split) -> None:
    train, _ = digits_split
    res = Blended(target=1, rate=0.05, alpha=0.2).poison(train)
    diff = (res.data.x[res.poison_index] - train.x[res.poison_index]).abs().flatten(1)
    assert (diff > 0).float().mean() > 0.9
    assert diff.max() <= 0.2 + 1e-6


def test_clean_label_keeps_labels_and_touches_only_target(digits_split, digits_cnn) -> None:
    train, _ = digits_split
    res = CleanLabel(target=4, rate=0.5, surrogate=digits_cnn, eps=0.1, steps=5).poison(train)
    assert torch.equal(res.data.y, train.y)
    assert torch.all(train.y[res.poison_index] == 4)
    assert len(res.poison_index) == round(0.5 * int((train.y == 4).sum()))
    changed = (res.data.x != train.x).flatten(1).any(1)
    assert torch.equal(changed, res.is_poison)
    # the adversarial step made the poisoned samples harder for the surrogate (before the trigger)
    plain = CleanLabel(target=4, rate=0.5, eps=0.0).poison(train)
    assert not torch.equal(plain.data.x[res.poison_index], res.data.x[res.poison_index])


def test_rate_and_target_are_validated(digits_split) -> None:
    train, _ = digits_split
    with pytest.raises(ParameterError, match="rate"):
        BadNets(target=0, rate=1.5).poison(train)
    with pytest.raises(ParameterError, match="target"):
        BadNets(target=10).poison(train)


def test_backdoor_reaches_high_asr_and_clean_model_does_not(
    digits_split, digits_spec, digits_cnn
) -> None:
    train, test = digits_split
    attack = BadNets(target=6, rate=0.1, size=3, position="bottom-left")
    poisoned = attack.poison(train)
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, poisoned.data.x, poisoned.data.y, epochs=10, lr=2e-3, seed=0)
    model = Classifier(module, digits_spec)
    metrics = backdoor_metrics(model, test.x, test.y, attack.trigger, attack.target)
    assert metrics["asr"] > 0.9
    assert metrics["clean_accuracy"] > 0.9
    assert attack_success_rate(digits_cnn, test.x, test.y, attack.trigger, attack.target) < 0.3
