"""HopSkipJump through label-only oracles: the trained digits CNN and tiny random models."""

from __future__ import annotations

import pytest
import torch
from evasion_helpers import tiny_classifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.attacks.evasion._projection import lp_norm
from mlwarden.attacks.evasion.hopskipjump import HopSkipJump
from mlwarden.core import Classifier, OracleError, ParameterError
from mlwarden.core.oracle import ClassifierOracle, Oracle


@pytest.fixture(scope="module")
def hsj_batch(digits_split) -> tuple[torch.Tensor, torch.Tensor]:
    """24 held-out digits."""
    _, test = digits_split
    return test.x[:24], test.y[:24]


@pytest.fixture(scope="module")
def l2_run(digits_cnn: Classifier, hsj_batch):
    """Untargeted L2 HSJ through a labels-only oracle, 600 queries per sample."""
    x, y = hsj_batch
    oracle = ClassifierOracle(digits_cnn, output="labels")
    return oracle, HopSkipJump(norm="l2", queries=600, seed=0)(oracle, x, y)


def test_labels_only_oracle_finds_small_adversarial_perturbations(
    l2_run, digits_cnn: Classifier, hsj_batch
) -> None:
    x, y = hsj_batch
    oracle, res = l2_run
    cc = res.clean_correct
    # without eps every sample gets an adversarial point, verified by the model itself
    assert bool(res.success.all())
    assert bool((digits_cnn.predict(res.x_adv) != y).all())
    norms = lp_norm(res.x_adv - x, "l2")
    assert torch.allclose(norms, res.perturbation_norm, atol=1e-5)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    # Square L2 and white-box PGD fool ~90-96% of this model at L2 eps 1.0: the
    # boundary is that close, and HSJ must find it through labels alone
    assert float(norms[cc].median()) < 1.0
    assert float((norms[cc] <= 1.0).float().mean()) >= 0.7
    assert res.gradient_evaluations == 0
    assert oracle.queries == res.queries == int(res.queries_per_sample.sum())
    assert int(res.queries_per_sample.max()) <= 600


def test_more_queries_shrink_the_perturbation(digits_cnn: Classifier, hsj_batch, l2_run) -> None:
    x, y = hsj_batch[0][:8], hsj_batch[1][:8]
    short = HopSkipJump(queries=60, seed=0)(digits_cnn, x, y)
    _, long = l2_run
    cc = short.clean_correct
    assert float(long.perturbation_norm[:8][cc].mean()) < float(short.perturbation_norm[cc].mean())


def test_eps_turns_success_into_within_eps(digits_cnn: Classifier, hsj_batch, l2_run) -> None:
    x, y = hsj_batch
    _, free = l2_run
    res = HopSkipJump(queries=600, eps=0.8, seed=0)(digits_cnn, x, y)
    norms = lp_norm(res.x_adv - x, "l2")
    assert float(norms.max()) <= 0.8 + 1e-5
    assert torch.equal(
        res.success[res.clean_correct], (res.perturbation_norm <= 0.8)[res.clean_correct]
    )
    failed = ~res.success
    assert bool(failed.any()) and bool(res.success.any())
    assert torch.equal(res.x_adv[failed], x[failed])  # failures come back unperturbed
    # samples inside eps stop costing queries: fewer than the run without eps
    assert res.queries < free.queries


def test_linf_variant(digits_cnn: Classifier, hsj_batch) -> None:
    x, y = hsj_batch[0][:12], hsj_batch[1][:12]
    res = HopSkipJump(norm="linf", queries=300, seed=0)(digits_cnn, x, y)
    norms = lp_norm(res.x_adv - x, "linf")
    assert torch.allclose(norms, res.perturbation_norm, atol=1e-6)
    assert bool((digits_cnn.predict(res.x_adv[res.success]) != y[res.success]).all())
    # PGD fools ~96% of this model at Linf 0.2; HSJ's median boundary distance is near it
    assert float(norms[res.clean_correct].median()) < 0.35


def test_targeted_reaches_the_target_class(digits_cnn: Classifier, hsj_batch) -> None:
    # every class occurs in the batch, so each target has a starting point even when
    # random noise never lands in it (then the nearest batch sample of the target is used)
    x, y = hsj_batch
    target = (y + 3) % 10
    res = HopSkipJump(queries=120, targeted=True, seed=0)(digits_cnn, x, target)
    assert bool(res.success.all())
    assert torch.equal(digits_cnn.predict(res.x_adv), target)
    assert bool((res.perturbation_norm > 0).all())


def test_budget_is_respected_exactly(digits_cnn: Classifier, hsj_batch) -> None:
    x, y = hsj_batch
    oracle = ClassifierOracle(digits_cnn, output="labels")
    res = HopSkipJump(queries=50, seed=0)(oracle, x, y)
    assert int(res.queries_per_sample.max()) <= 50
    assert oracle.queries == res.queries
    assert torch.all(res.queries_per_sample[~res.clean_correct] == 1)
    # an oracle with its own budget: the attack stops cleanly with what it has
    capped = ClassifierOracle(digits_cnn, output="labels", budget=200)
    res = HopSkipJump(queries=500, seed=0)(capped, x, y)
    assert capped.queries == res.queries <= 200
    assert bool((digits_cnn.predict(res.x_adv[res.success]) != y[res.success]).all())


def test_same_seed_same_result(digits_cnn: Classifier, hsj_batch) -> None:
    x, y = hsj_batch[0][:6], hsj_batch[1][:6]
    a = HopSkipJump(queries=80, seed=1)(digits_cnn, x, y)
    b = HopSkipJump(queries=80, seed=1)(digits_cnn, x, y)
    c = HopSkipJump(queries=80, seed=2)(digits_cnn, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries_per_sample, b.queries_per_sample)
    assert not torch.equal(a.x_adv, c.x_adv)


class _BadLabels(Oracle):
    def __init__(self, classifier: Classifier, mode: str) -> None:
        super().__init__(classifier.spec, output="labels")
        self.classifier, self.mode = classifier, mode

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        labels = self.classifier.predict(x)
        return labels + 100 if self.mode == "range" else labels[:-1]


@pytest.mark.parametrize("mode", ["range", "shape"])
def test_malformed_oracle_output_raises_oracle_error(
    digits_cnn: Classifier, hsj_batch, mode: str
) -> None:
    x, y = hsj_batch
    with pytest.raises(OracleError):
        HopSkipJump(queries=20)(_BadLabels(digits_cnn, mode), x, y)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"norm": "l0"}, "norm"),
        ({"queries": 0}, "queries"),
        ({"queries": -5}, "queries"),
        ({"max_iter": -1}, "max_iter"),
        ({"init_evals": 0}, "init_evals"),
        ({"init_evals": 50, "max_evals": 10}, "max_evals"),
        ({"gamma": 0.0}, "gamma"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_hyper_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ParameterError, match=name):
        HopSkipJump(**kwargs)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(6,), (4, 5), (2, 3, 3)]),
    bounds=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (-0.5, 3.0)]),
    eps=st.one_of(st.none(), st.floats(0.05, 3.0)),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 3),
)
def test_outputs_stay_in_the_box_and_within_eps(shape, bounds, eps, norm, seed) -> None:
    clf = tiny_classifier(shape, 3, bounds, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    low, high = bounds
    x = low + (high - low) * torch.rand(5, *shape, generator=gen)
    y = torch.randint(0, 3, (5,), generator=gen)
    x_before = x.clone()
    res = HopSkipJump(norm=norm, queries=40, init_evals=10, eps=eps, seed=seed)(clf, x, y)
    assert torch.equal(x, x_before)
    assert float(res.x_adv.min()) >= low and float(res.x_adv.max()) <= high
    assert int(res.queries_per_sample.max()) <= 40
    pred = clf.predict(res.x_adv)
    assert bool((pred[res.success] != y[res.success]).all())
    if eps is not None:
        assert float(lp_norm(res.x_adv - x, norm).max()) <= eps * (1 + 1e-5)
