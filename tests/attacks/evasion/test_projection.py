"""Lp-ball geometry: projections stay inside the ball and the box, random starts too."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.attacks.evasion._projection import (
    check_eps,
    check_norm,
    lp_norm,
    project,
    project_adversarial,
    random_direction,
    random_init,
    steepest_direction,
)
from mlwarden.core.errors import ParameterError
from mlwarden.core.seeding import make_generator

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    shape=shapes,
    eps=st.floats(0.0, 3.0),
    norm=st.sampled_from(["linf", "l2"]),
    low=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
    seed=st.integers(0, 1000),
)
def test_project_adversarial_respects_ball_and_box(
    n: int, shape: tuple[int, ...], eps: float, norm: str, low: float, width: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    high = low + width
    x = low + torch.rand((n, *shape), generator=gen) * width
    wild = x + torch.randn((n, *shape), generator=gen) * 5
    out = project_adversarial(wild, x, eps, norm, (low, high))
    assert float(lp_norm(out - x, norm).max()) <= eps + 1e-5
    assert float(out.min()) >= low - 1e-6 and float(out.max()) <= high + 1e-6
    start = random_init(x, eps, norm, (low, high), gen)
    assert float(lp_norm(start - x, norm).max()) <= eps + 1e-5
    assert float(start.min()) >= low - 1e-6 and float(start.max()) <= high + 1e-6


def test_project_is_identity_inside_and_scales_outside() -> None:
    delta = torch.tensor([[0.3, 0.4], [3.0, 4.0]])
    out = project(delta, 1.0, "l2")
    assert torch.allclose(out[0], delta[0])
    assert torch.allclose(out[1], torch.tensor([0.6, 0.8]))
    assert torch.equal(
        project(torch.tensor([[2.0, -0.5]]), 1.0, "linf"), torch.tensor([[1.0, -0.5]])
    )


def test_per_sample_eps() -> None:
    delta = torch.ones(3, 4)
    eps = torch.tensor([0.0, 0.5, 2.0])
    assert torch.allclose(
        lp_norm(project(delta, eps, "linf"), "linf"), torch.tensor([0.0, 0.5, 1.0])
    )
    assert torch.allclose(lp_norm(project(delta, eps, "l2"), "l2"), torch.tensor([0.0, 0.5, 2.0]))


def test_steepest_direction_has_unit_norm_and_survives_zero_gradients() -> None:
    grad = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    d = steepest_direction(grad, "l2")
    assert torch.allclose(d[0], torch.tensor([0.6, -0.8]))
    assert torch.equal(d[1], torch.zeros(2))
    assert torch.equal(steepest_direction(grad, "linf")[0], torch.tensor([1.0, -1.0]))


def test_random_l2_direction_fills_the_ball_uniformly() -> None:
    """Uniform in the d-ball: P(||r|| <= 1/2) = 2^-d, so in 2-D about a quarter."""
    r = random_direction((20000, 2), "l2", make_generator(0))
    norms = lp_norm(r, "l2")
    assert float(norms.max()) <= 1.0 + 1e-6
    assert abs(float((norms <= 0.5).float().mean()) - 0.25) < 0.02


def test_random_init_is_reproducible() -> None:
    x = torch.rand(4, 3)
    a = random_init(x, 0.1, "linf", (0, 1), make_generator(7))
    b = random_init(x, 0.1, "linf", (0, 1), make_generator(7))
    c = random_init(x, 0.1, "linf", (0, 1), make_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "x"])
def test_check_eps_refuses_bad_values(bad: object) -> None:
    with pytest.raises(ParameterError, match="eps"):
        check_eps(bad)  # type: ignore[arg-type]


def test_check_norm_accepts_aliases_and_names_the_parameter() -> None:
    assert check_norm("Linf") == "linf" and check_norm("2") == "l2" and check_norm("inf") == "linf"
    with pytest.raises(ParameterError, match="norm"):
        check_norm("l1")
