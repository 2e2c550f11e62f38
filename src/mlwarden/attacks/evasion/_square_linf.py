"""Square Linf proposals drawn without replacement, for deterministic oracles.

At a fixed window size the Linf Square attack can only propose a finite set of
points from the current one: a window position times a vertex ``+-eps`` per channel.
The paper draws them with replacement, so on a small input (8x8 digits: 64
one-pixel windows) a sample that has reached a local optimum keeps paying for
proposals that were already rejected, thousands of times. Against a deterministic
oracle a rejected proposal is rejected again, so we draw each one at most once from
the same point. A sample whose whole set is rejected cannot move until the window
size changes; it sits out until then, and leaves once the smallest size is spent.
That is where mlwarden's Square is cheaper than the peers' at the same strength: it
never pays for a query whose answer it knows.

Only used when the set is small enough to track (see `neighbourhood_size`); larger
inputs fall back to the paper's draw, where repeats are rare anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlwarden.attacks.evasion._projection import clip_to_bounds

MAX_TRACKED = 4096
"""Largest candidate set tracked per sample (a bool per candidate and sample)."""

MAX_CHANNELS = 4
"""More channels means ``2**C`` vertices per window: too many to enumerate."""


def neighbourhood_size(c: int, h: int, w: int, sides: tuple[int, int]) -> int | None:
    """Number of distinct proposals at this window size, or None when not tracked."""
    if c > MAX_CHANNELS:
        return None
    size = (2**c) * (h - sides[0] + 1) * (w - sides[1] + 1)
    return size if size <= MAX_TRACKED else None


def mask_at(
    top: torch.Tensor, left: torch.Tensor, h: int, w: int, sides: tuple[int, int]
) -> torch.Tensor:
    """Masks ``(N, 1, H, W)`` of windows of size ``sides`` with top-left corners ``top, left``."""
    sh, sw = sides
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + sh)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + sw)
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


def _vertices(c: int, device: torch.device) -> torch.Tensor:
    """All ``2**c`` sign vectors, shape ``(2**c, c)``: bit ``k`` of the index is channel ``k``."""
    index = torch.arange(2**c, device=device)[:, None]
    bits = (index >> torch.arange(c, device=device)[None]) & 1
    return (bits * 2 - 1).to(torch.float32)


def changing_proposals(
    x0: torch.Tensor,
    cur: torch.Tensor,
    sides: tuple[int, int],
    eps: float,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """Which proposals would change ``cur``, shape ``(N, 2**C * positions)``.

    A proposal sets its window to ``clip(x0 + v * eps)``; it is useless (the paper
    redraws it) when every pixel of the window already holds that value.
    """
    n, c, _, _ = x0.shape
    verts = _vertices(c, x0.device)
    out = []
    for v in verts:
        target = clip_to_bounds(x0 + v[None, :, None, None] * eps, bounds)
        differs = ((target - cur).abs() >= 1e-7).any(dim=1, keepdim=True).to(torch.float32)
        # a window changes the point when any of its pixels differs: max-pool over windows
        out.append(F.max_pool2d(differs, sides, stride=1).flatten(1) > 0)
    return torch.cat(out, dim=1)


def draw(available: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row, uniform over that row's available proposals."""
    scores = torch.rand(available.shape, generator=gen).to(available.device)
    return scores.masked_fill(~available, -1.0).argmax(dim=1)


def build(
    x0: torch.Tensor,
    cur: torch.Tensor,
    choice: torch.Tensor,
    sides: tuple[int, int],
    eps: float,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """The points of proposals ``choice`` (indices from `changing_proposals`' layout)."""
    n, c, h, w = x0.shape
    sh, sw = sides
    positions = (h - sh + 1) * (w - sw + 1)
    vertex, pos = choice // positions, choice % positions
    top, left = pos // (w - sw + 1), pos % (w - sw + 1)
    mask = mask_at(top, left, h, w, sides)
    signs = _vertices(c, x0.device)[vertex][:, :, None, None] * eps
    # outside the window the point is kept bit for bit, so later comparisons are exact
    return torch.where(mask, clip_to_bounds(x0 + signs, bounds), cur)


__all__ = ["MAX_TRACKED", "build", "changing_proposals", "draw", "mask_at", "neighbourhood_size"]
