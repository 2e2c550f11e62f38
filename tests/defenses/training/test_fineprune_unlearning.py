"""Mitigation: fine-pruning and unlearning lower the attack success rate and keep accuracy."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.poisoning import attack_success_rate
from mlwarden.core.errors import InputError
from mlwarden.defenses.training.fineprune import FinePruning
from mlwarden.defenses.training.unlearning import Unlearning


def test_fine_pruning_lowers_asr_and_keeps_accuracy(badnets_model, digits_split, capsys) -> None:
    train, test = digits_split
    model, attack = badnets_model.classifier, badnets_model.attack
    teacher_state = {k: v.clone() for k, v in model.state_dict().items()}
    asr_before = attack_success_rate(model, test.x, test.y, attack.trigger, attack.target)
    acc_before = model.accuracy(test.x, test.y)
    res = FinePruning(epochs=8, lr=3e-3).apply(model, train.x, train.y)
    asr_after = attack_success_rate(res.classifier, test.x, test.y, attack.trigger, attack.target)
    acc_after = res.classifier.accuracy(test.x, test.y)
    with capsys.disabled():
        print(
            f"\nfine-pruning: ASR {asr_before:.3f} -> {asr_after:.3f}, accuracy "
            f"{acc_before:.3f} -> {acc_after:.3f}, pruned "
            f"{len(res.pruned_channels)}/{res.total_channels} of {res.layer}"
        )
    assert asr_after < asr_before - 0.3
    assert acc_after > acc_before - 0.05
    weight = res.classifier.module.get_submodule(res.layer).weight
    assert torch.all(weight[res.pruned_channels] == 0), (
        "pruned channels must stay zero after fine-tuning"
    )
    assert all(torch.equal(v, teacher_state[k]) for k, v in model.state_dict().items()), (
        "input model changed"
    )


def test_fine_pruning_needs_a_convolution_or_a_named_layer(digits_mlp, digits_split) -> None:
    train, _ = digits_split
    with pytest.raises(InputError, match="no convolution"):
        FinePruning(epochs=1).apply(digits_mlp, train.x, train.y)
    res = FinePruning(epochs=1, layer="1.features.0").apply(digits_mlp, train.x, train.y)
    assert res.total_channels == 64


def test_unlearning_the_reverse_engineered_trigger(
    badnets_model, zoo_scans, digits_split, capsys
) -> None:
    train, test = digits_split
    model, attack = badnets_model.classifier, badnets_model.attack
    nc = next(s for s in zoo_scans[badnets_model.name] if s.method == "neural_cleanse")
    trigger = nc.trigger_for(nc.target_class)
    res = Unlearning(trigger, epochs=5).apply(model, train.x, train.y)
    before = attack_success_rate(model, test.x, test.y, attack.trigger, attack.target)
    after = attack_success_rate(res.classifier, test.x, test.y, attack.trigger, attack.target)
    acc = res.classifier.accuracy(test.x, test.y)
    with capsys.disabled():
        print(f"\nunlearning: ASR {before:.3f} -> {after:.3f}, accuracy {acc:.3f}")
    assert after < 0.3 < before
    assert acc > model.accuracy(test.x, test.y) - 0.05
