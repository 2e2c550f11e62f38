"""Triggers: where the patch lands, what it holds, and that inputs are never modified."""

from __future__ import annotations

import pytest
import torch

from mlwarden.attacks.poisoning import BlendTrigger, MaskPatternTrigger, PatchTrigger
from mlwarden.core.errors import DataError, ParameterError


@pytest.mark.parametrize(
    ("position", "rows", "cols"),
    [
        ("bottom-right", slice(5, 8), slice(5, 8)),
        ("top-left", slice(0, 3), slice(0, 3)),
        ("top-right", slice(0, 3), slice(5, 8)),
        ("bottom-left", slice(5, 8), slice(0, 3)),
        ("center", slice(2, 5), slice(2, 5)),
        ((1, 4), slice(1, 4), slice(4, 7)),
    ],
)
def test_patch_lands_where_asked(position, rows, cols) -> None:
    trig = PatchTrigger(size=3, position=position, pattern="solid")
    x = torch.zeros(2, 1, 8, 8)
    out = trig.apply(x)
    expected = torch.zeros(8, 8)
    expected[rows, cols] = 1.0
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(x, torch.zeros(2, 1, 8, 8)), "apply must not modify its input"


def test_patch_patterns_and_bounds() -> None:
    x = torch.full((1, 3, 6, 6), 0.5)
    checker = PatchTrigger(size=2, position="top-left", pattern="checkerboard").apply(
        x, (-1.0, 1.0)
    )
    assert checker[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert checker[0, :, 0, 1].tolist() == [-1.0, -1.0, -1.0]
    assert torch.all(checker[0, :, 2:, 2:] == 0.5)
    r1 = PatchTrigger(size=3, pattern="random", seed=3).mask_and_pattern((1, 8, 8))[1]
    r2 = PatchTrigger(size=3, pattern="random", seed=3).mask_and_pattern((1, 8, 8))[1]
    r3 = PatchTrigger(size=3, pattern="random", seed=4).mask_and_pattern((1, 8, 8))[1]
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_patch_on_tabular_features() -> None:
    out = PatchTrigger(size=4, position="top-right", pattern="solid").apply(torch.zeros(3, 30))
    assert out[:, 26:].eq(1).all() and out[:, :26].eq(0).all()


def test_blend_mixes_with_alpha() -> None:
    trig = BlendTrigger(alpha=0.25, pattern="stripes")
    x = torch.full((1, 1, 4, 4), 0.4)
    out = trig.apply(x)
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(0.75 * 0.4 + 0.25))
    assert torch.allclose(out[0, 0, 0, 1], torch.tensor(0.75 * 0.4))


def test_bad_trigger_parameters_are_named() -> None:
    with pytest.raises(ParameterError, match="does not fit"):
        PatchTrigger(size=9).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ParameterError, match="position"):
        PatchTrigger(position="middle").apply(torch.zeros(1, 1, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="alpha"):
        BlendTrigger(alpha=0.0).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(DataError, match="shape"):
        MaskPatternTrigger(torch.ones(1, 4, 4), torch.ones(1, 4, 4)).apply(torch.zeros(1, 1, 8, 8))
