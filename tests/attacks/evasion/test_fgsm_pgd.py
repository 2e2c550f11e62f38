"""FGSM and PGD on a real trained digits CNN and on tiny random models."""

from __future__ import annotations

import math

import pytest
import torch
from evasion_helpers import tiny_classifier
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.attacks.evasion import FGSM, PGD
from mlwarden.attacks.evasion._projection import lp_norm
from mlwarden.core import Classifier, InputError, InputSpec, ParameterError


def test_pgd_same_seed_same_result(digits_cnn: Classifier, digits_batch) -> None:
    x, y = digits_batch
    a = PGD(0.1, steps=5, restarts=2, seed=3)(digits_cnn, x, y)
    b = PGD(0.1, steps=5, restarts=2, seed=3)(digits_cnn, x, y)
    c = PGD(0.1, steps=5, restarts=2, seed=4)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert a.gradient_evaluations == b.gradient_evaluations
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_is_at_least_as_strong_as_fgsm(digits_cnn: Classifier, digits_batch, norm, eps) -> None:
    x, y = digits_batch
    fgsm = FGSM(eps, norm=norm)(digits_cnn, x, y)
    pgd = PGD(eps, steps=10, norm=norm)(digits_cnn, x, y)
    assert pgd.robust_accuracy <= fgsm.robust_accuracy
    assert pgd.robust_accuracy < pgd.clean_accuracy - 0.2  # the attack really works
    for res in (fgsm, pgd):
        assert float(lp_norm(res.x_adv - x, norm).max()) <= eps + 1e-5
        assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
        # success is what the model says about x_adv, not bookkeeping
        pred = digits_cnn.predict(res.x_adv)
        assert torch.equal(res.success, pred != y)


def test_robust_accuracy_falls_with_eps_and_reaches_zero(
    digits_cnn: Classifier, digits_batch
) -> None:
    x, y = digits_batch
    accs = [PGD(e, steps=10)(digits_cnn, x, y).robust_accuracy for e in (0.0, 0.05, 0.15, 0.5)]
    assert accs[0] == pytest.approx(digits_cnn.accuracy(x, y))
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] == 0.0


def test_early_exit_spends_less_on_weak_models(digits_cnn: Classifier, digits_batch) -> None:
    x, y = digits_batch
    small = PGD(0.02, steps=10)(digits_cnn, x, y)
    large = PGD(0.3, steps=10)(digits_cnn, x, y)
    standing = int(small.clean_correct.sum())
    # at a small eps nearly everyone resists all 10 steps; at a large eps most leave early
    assert small.gradient_evaluations <= 10 * standing
    assert large.gradient_evaluations < small.gradient_evaluations / 2


def test_restarts_only_attack_survivors_and_never_lose_successes(
    digits_cnn: Classifier, digits_batch
) -> None:
    x, y = digits_batch
    one = PGD(0.08, steps=5, restarts=1, seed=0)(digits_cnn, x, y)
    three = PGD(0.08, steps=5, restarts=3, seed=0)(digits_cnn, x, y)
    assert bool((three.success | ~one.success).all())  # restart 1 is identical; more can only add
    survivors = int((one.clean_correct & ~one.success).sum())
    assert three.gradient_evaluations <= one.gradient_evaluations + 2 * 5 * survivors


def test_targeted_pgd_reaches_the_target(digits_cnn: Classifier, digits_batch) -> None:
    x, y = digits_batch
    target = (y + 1) % 10
    res = PGD(0.3, steps=20, targeted=True)(digits_cnn, x, target)
    assert res.success_rate > 0.9
    assert torch.equal(res.success, digits_cnn.predict(res.x_adv) == target)
    fgsm = FGSM(0.3, targeted=True)(digits_cnn, x, target)
    assert fgsm.success_rate < res.success_rate


@pytest.mark.parametrize("loss", ["margin", "dlr"])
def test_other_losses_work(digits_cnn: Classifier, digits_batch, loss: str) -> None:
    x, y = digits_batch
    res = PGD(0.15, steps=10, loss=loss)(digits_cnn, x, y)
    assert res.robust_accuracy < 0.5 * res.clean_accuracy


def test_already_fooled_samples_cost_nothing(digits_cnn: Classifier, digits_batch) -> None:
    x, y = digits_batch
    wrong = (digits_cnn.predict(x) + 1) % 10  # every label wrong: all fooled at the start
    res = PGD(0.1, steps=10)(digits_cnn, x, wrong)
    assert res.gradient_evaluations == 0 and bool(res.success.all())
    assert torch.equal(res.x_adv, x)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    n=st.integers(1, 5),
    eps=st.floats(0.0, 2.0),
    norm=st.sampled_from(["linf", "l2"]),
    low=st.floats(-1.0, 0.5),
    width=st.floats(0.2, 2.0),
    seed=st.integers(0, 100),
)
def test_pgd_stays_in_ball_and_box_on_any_model(shape, n, eps, norm, low, width, seed) -> None:
    bounds = (low, low + width)
    clf = tiny_classifier(shape, 3, bounds, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = low + torch.rand((n, *shape), generator=gen) * width
    y = torch.randint(0, 3, (n,), generator=gen)
    for attack in (PGD(eps, steps=3, norm=norm, seed=seed), FGSM(eps, norm=norm)):
        res = attack(clf, x, y)
        assert res.x_adv.shape == x.shape and res.success.shape == (n,)
        assert float(lp_norm(res.x_adv - x, norm).max()) <= eps + 1e-5
        assert float(res.x_adv.min()) >= bounds[0] - 1e-6
        assert float(res.x_adv.max()) <= bounds[1] + 1e-6


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": math.nan}, "eps"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "norm": "l7"}, "norm"),
        ({"eps": 0.1, "alpha": 0.0}, "alpha"),
        ({"eps": 0.1, "restarts": 0}, "restarts"),
        ({"eps": 0.1, "loss": "hinge"}, "loss"),
    ],
)
def test_bad_hyper_parameters_name_the_parameter(kwargs, name) -> None:
    with pytest.raises(ParameterError, match=name):
        PGD(**kwargs)


def test_fgsm_refuses_bad_eps_and_norm() -> None:
    with pytest.raises(ParameterError, match="eps"):
        FGSM(-1.0)
    with pytest.raises(ParameterError, match="norm"):
        FGSM(0.1, norm="l1")


class _NaNModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.flatten(1)[:, :2] - 2.0)  # log of a negative number: NaN


def test_nan_logits_give_a_clear_error() -> None:
    clf = Classifier(_NaNModel(), InputSpec.for_classes((4,), 2))
    with pytest.raises(InputError, match="NaN"):
        PGD(0.1)(clf, torch.rand(3, 4), torch.zeros(3, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pgd_runs_on_cuda(digits_cnn: Classifier, digits_batch) -> None:
    import copy

    x, y = digits_batch
    gpu = copy.deepcopy(digits_cnn).to("cuda")
    res = PGD(0.1, steps=5)(gpu, x, y)
    cpu = PGD(0.1, steps=5)(digits_cnn, x, y)
    assert res.x_adv.device == x.device
    assert abs(res.robust_accuracy - cpu.robust_accuracy) < 0.03
