"""APGD-CE, APGD-DLR and APGD-T on the trained digits CNN."""

from __future__ import annotations

import pytest
import torch
from evasion_helpers import tiny_classifier

from mlwarden.attacks.evasion import APGD, PGD, APGDTargeted
from mlwarden.attacks.evasion._gradients import dlr_objective
from mlwarden.attacks.evasion._projection import lp_norm
from mlwarden.core import Classifier, ParameterError


@pytest.fixture(scope="module")
def batch(digits_batch):
    x, y = digits_batch
    return x[:100], y[:100]


def test_apgd_ce_matches_or_beats_pgd_at_equal_budget(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    pgd = PGD(0.1, steps=20)(digits_cnn, x, y)
    apgd = APGD(0.1, steps=20)(digits_cnn, x, y)
    assert apgd.robust_accuracy <= pgd.robust_accuracy + 0.02
    assert apgd.robust_accuracy < apgd.clean_accuracy - 0.2
    assert float(lp_norm(apgd.x_adv - x, "linf").max()) <= 0.1 + 1e-5
    assert torch.equal(apgd.success, digits_cnn.predict(apgd.x_adv) != y)
    # at most steps + 1 gradient evaluations per attacked sample (one at the start)
    assert apgd.gradient_evaluations <= 21 * int(apgd.clean_correct.sum())


def test_apgd_is_deterministic_and_l2_stays_in_ball(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    a = APGD(1.0, norm="l2", steps=10, loss="dlr", seed=1)(digits_cnn, x, y)
    b = APGD(1.0, norm="l2", steps=10, loss="dlr", seed=1)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert float(lp_norm(a.x_adv - x, "l2").max()) <= 1.0 + 1e-4
    assert a.attack == "apgd-dlr"


def test_apgd_t_is_a_strong_untargeted_attack(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    ce = APGD(0.1, steps=10)(digits_cnn, x, y)
    t = APGDTargeted(0.1, steps=10, num_targets=3)(digits_cnn, x, y)
    assert torch.equal(t.success, digits_cnn.predict(t.x_adv) != y)  # untargeted success
    assert t.robust_accuracy <= ce.robust_accuracy + 0.05
    assert t.robust_accuracy < t.clean_accuracy - 0.2
    # on the survivors of APGD-CE it only spends on samples still standing
    left = ~ce.success & ce.clean_correct
    rest = APGDTargeted(0.1, steps=10, num_targets=3)(digits_cnn, x[left], y[left])
    assert rest.gradient_evaluations <= 3 * 11 * int(left.sum())


def test_targeted_apgd_reaches_targets(digits_cnn: Classifier, batch) -> None:
    x, y = batch
    target = (y + 3) % 10
    res = APGD(0.3, steps=20, targeted=True)(digits_cnn, x, target)
    pgd = PGD(0.3, steps=20, targeted=True)(digits_cnn, x, target)
    assert res.success_rate > 0.75 and res.success_rate >= pgd.success_rate - 0.02
    assert torch.equal(res.success, digits_cnn.predict(res.x_adv) == target)


def test_dlr_is_scale_invariant() -> None:
    logits = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert torch.allclose(
        dlr_objective(logits, y, False), dlr_objective(100 * logits, y, False), atol=1e-5
    )
    assert torch.allclose(
        dlr_objective(logits, y, True), dlr_objective(7 * logits, y, True), atol=1e-5
    )


def test_apgd_on_binary_model_falls_back_from_dlr() -> None:
    clf = tiny_classifier((5,), 2, seed=1)
    x = torch.rand(16, 5)
    y = clf.predict(x)
    res = APGDTargeted(0.5, steps=5)(clf, x, y)  # 1 target, margin loss instead of DLR
    assert res.x_adv.shape == x.shape


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"eps": -1}, "eps"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "rho": 0}, "rho"),
        ({"eps": 0.1, "loss": "x"}, "loss"),
        ({"eps": 0.1, "norm": "l0"}, "norm"),
    ],
)
def test_apgd_validates(kwargs, name) -> None:
    with pytest.raises(ParameterError, match=name):
        APGD(**kwargs)
    if "loss" not in kwargs:
        with pytest.raises(ParameterError, match=name):
            APGDTargeted(**kwargs)
