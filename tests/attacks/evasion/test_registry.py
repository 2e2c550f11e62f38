"""The attack registry and the presets: every entry builds and runs on the kind of model it
declares, requirement mismatches are refused with both sides named, presets are data."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from mlwarden.attacks.base import Attack
from mlwarden.attacks.evasion.registry import (
    ATTACK_NAMES,
    ATTACKS,
    PRESET_NAMES,
    PRESETS,
    build_attack,
    preset_attacks,
    require_attack,
    require_preset,
)
from mlwarden.core import Classifier, ParameterError
from mlwarden.core.contract import Capability
from mlwarden.core.oracle import ClassifierOracle


def _model_for(entry_needs: frozenset[Capability], clf: Classifier):
    """The weakest model kind that offers what an entry needs."""
    if Capability.GRADIENTS in entry_needs:
        return clf
    if Capability.SCORES in entry_needs:
        return ClassifierOracle(clf)
    return ClassifierOracle(clf, output="labels")


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_entry_builds_and_runs_on_the_model_kind_it_declares(
    name: str, digits_cnn: Classifier, digits_batch
) -> None:
    entry = ATTACKS[name]
    norm = entry.norms[-1]
    attack = build_attack(name, eps=1.0 if norm == "l2" else 0.2, norm=norm, steps=3, queries=30)
    assert isinstance(attack, Attack) and attack.name == name
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    model = _model_for(entry.needs, digits_cnn)
    res = attack(model, x, y)
    assert res.x_adv.shape == x.shape and res.success.shape == (6,)
    # success is what the model says about the returned points
    fooled = res.success & res.clean_correct
    assert bool((digits_cnn.predict(res.x_adv[fooled]) != y[fooled]).all())
    if entry.spends == "queries":
        assert res.queries > 0 and res.gradient_evaluations == 0


def test_needs_are_declared_per_access_kind() -> None:
    white = {n for n, e in ATTACKS.items() if e.needs == {Capability.GRADIENTS}}
    assert white == {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "cw", "deepfool"}
    assert ATTACKS["square"].needs == {Capability.SCORES}
    assert ATTACKS["hopskipjump"].needs == {Capability.LABELS}


def test_budget_arguments_reach_the_attacks() -> None:
    hsj = build_attack("hopskipjump", eps=0.5, norm="l2", steps=7, queries=321, seed=3)
    assert (hsj.max_iter, hsj.queries, hsj.seed, hsj.eps, hsj.norm) == (7, 321, 3, 0.5, "l2")
    pgd = build_attack("PGD ", eps=0.1, steps=9, restarts=2)
    assert (pgd.steps, pgd.restarts) == (9, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "jsma", "eps": 0.1}, "attack must be one of fgsm, pgd, .*hopskipjump"),
        ({"name": "cw", "eps": 0.1, "norm": "linf"}, "attack 'cw' supports norm l2, not linf"),
        ({"name": "pgd", "eps": 0.1, "norm": "l1"}, "norm must be one of"),
    ],
)
def test_bad_names_and_norms(kwargs, match) -> None:
    with pytest.raises(ParameterError, match=match):
        build_attack(**kwargs)


def test_requirement_mismatch_names_both_sides_and_what_would_work(digits_cnn: Classifier) -> None:
    scores = ClassifierOracle(digits_cnn)
    labels = ClassifierOracle(digits_cnn, output="labels")
    with pytest.raises(ParameterError) as exc:
        require_attack(scores, "pgd")
    assert str(exc.value) == (
        "attack 'pgd' needs gradients; 'digits-cnn' is a score oracle "
        "(attacks that work on it: square, hopskipjump)"
    )
    with pytest.raises(ParameterError) as exc:
        require_attack(labels, "square")
    assert str(exc.value) == (
        "attack 'square' needs class scores; 'digits-cnn' is a label-only oracle "
        "(attacks that work on it: hopskipjump)"
    )
    with pytest.raises(ParameterError) as exc:
        require_preset(scores, "standard")
    assert str(exc.value) == (
        "preset 'standard' needs gradients; 'digits-cnn' is a score oracle "
        "(presets that work on it: blackbox, labels)"
    )
    assert require_attack(digits_cnn, "hopskipjump").name == "hopskipjump"
    assert require_preset(labels, "labels").name == "labels"


def test_presets_are_registry_attacks_cheapest_first() -> None:
    assert PRESET_NAMES == ("pgd", "fast", "standard", "thorough", "blackbox", "labels")
    expected = {
        "pgd": ["pgd"],
        "fast": ["apgd-ce"],
        "standard": ["apgd-ce", "apgd-t", "square"],
        "thorough": ["apgd-ce", "apgd-dlr", "apgd-t", "square"],
        "blackbox": ["square"],
        "labels": ["hopskipjump"],
    }
    assert {name: p.attack_names for name, p in PRESETS.items()} == expected
    for name in PRESETS:
        built = preset_attacks(name, 0.1)
        assert [a.name for a in built] == expected[name]
    assert PRESETS["standard"].needs == {Capability.GRADIENTS, Capability.SCORES}
    assert PRESETS["labels"].needs == {Capability.LABELS}


def test_preset_budgets_and_overrides() -> None:
    ce, dlr, t, square = preset_attacks("thorough", 0.1, seed=4)
    assert (ce.restarts, ce.steps, dlr.seed, t.seed, square.queries) == (5, 100, 5, 4, 10000)
    assert preset_attacks("pgd", 0.1)[0].steps == 20
    assert preset_attacks("labels", 0.3)[0].max_iter == 50
    apgd, apgd_t, sq = preset_attacks("standard", 0.1, norm="l2", steps=7, queries=11)
    assert (apgd.steps, apgd_t.steps, sq.queries) == (7, 7, 11)
    assert {apgd.norm, apgd_t.norm, sq.norm} == {"l2"}
    with pytest.raises(ParameterError, match="preset must be one of pgd, fast"):
        preset_attacks("heavy", 0.1)


def test_check_settings_and_help_are_derived_from_the_registry() -> None:
    from mlwarden.attacks.text.registry import TEXT_PRESET_NAMES
    from mlwarden.cli.attack import evasion_command
    from mlwarden.evaluation.evasion import EvasionSettings, RobustnessSettings

    presets = get_args(RobustnessSettings.model_fields["preset"].annotation)
    assert presets == PRESET_NAMES + TEXT_PRESET_NAMES
    assert get_args(EvasionSettings.model_fields["attack"].annotation) == ATTACK_NAMES
    import inspect

    help_text = inspect.signature(evasion_command).parameters["attack"].default.help
    for name, entry in ATTACKS.items():
        assert f"{name}: {entry.help}" in help_text


def test_hopskipjump_in_an_ensemble_on_a_label_only_oracle(digits_cnn: Classifier, digits_batch):
    from mlwarden.evaluation import evaluate_robustness

    x, y = digits_batch[0][:8], digits_batch[1][:8]
    oracle = ClassifierOracle(digits_cnn, output="labels")
    r = evaluate_robustness(oracle, x, y, [0.5, 2.0], preset="labels", norm="l2", queries=150)
    assert [c.attack for c in r.costs] == ["hopskipjump", "hopskipjump"]
    assert r.robust_accuracy(2.0) <= r.robust_accuracy(0.5) < r.clean_accuracy
    assert oracle.queries == r.queries + len(x)  # plus one clean query per sample
    broken = r.clean_correct & ~r.robust[2.0]
    adv = r.x_adv[2.0][broken]
    assert bool((digits_cnn.predict(adv) != y[broken]).all())
    assert float(torch.linalg.vector_norm((adv - x[broken]).flatten(1), dim=1).max()) <= 2.0 + 1e-4
