"""Output hardening keeps the label and removes or distorts the rest."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.core.errors import ParameterError
from mlwarden.defenses.output import labels_only, reverse_sigmoid, round_probabilities, top_k


def _probs(seed: int, n: int = 64, c: int = 10, scale: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g) * scale, dim=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.1, 3.0), gamma=st.floats(0.05, 2.0),
       scale=st.floats(0.1, 10.0))
def test_reverse_sigmoid_keeps_argmax_and_is_a_distribution(seed, beta, gamma, scale) -> None:  # type: ignore[no-untyped-def]
    p = _probs(seed, scale=scale)
    before = p.clone()
    q = reverse_sigmoid(p, beta, gamma)
    assert torch.equal(p, before)  # input untouched
    assert torch.equal(q.argmax(1), p.argmax(1))
    assert torch.allclose(q.sum(1), torch.ones(len(q)), atol=1e-5) and bool((q > 0).all())


def test_reverse_sigmoid_really_distorts_confidence() -> None:
    p = _probs(0, scale=6.0)
    q = reverse_sigmoid(p, 0.7, 0.4)
    assert (q - p).abs().max() > 0.2
    # confident answers no longer look confident: the top score is pulled down
    confident = p.max(1).values > 0.95
    assert bool((q.max(1).values[confident] < 0.9).all())


def test_rounding_top_k_and_labels() -> None:
    p = _probs(1)
    r = round_probabilities(p, 2)
    assert torch.equal(r.argmax(1), p.argmax(1)) and (r - p).abs().max() <= 0.005 + 1e-7
    values, idx = top_k(p, 3)
    assert values.shape == (64, 3) and torch.equal(idx[:, 0], p.argmax(1))
    assert bool((values[:, :-1] >= values[:, 1:]).all())
    assert torch.equal(labels_only(p), p.argmax(1))
    assert top_k(p, 50)[0].shape == (64, 10)


@pytest.mark.parametrize("call", [
    lambda p: top_k(p, 0), lambda p: round_probabilities(p, 9),
    lambda p: reverse_sigmoid(p, 0.0), lambda p: labels_only(p[0]),
])
def test_bad_parameters(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError):
        call(_probs(2))
