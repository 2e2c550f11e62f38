"""Square Attack: score-based black-box evasion by random search over squares.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).

The attack needs only the oracle's scores. Each iteration proposes, for every sample
still standing, one random change confined to a square window (Linf: a constant
``+-eps`` per channel; L2: a pair of "pseudo-Gaussian" bumps that move mass inside the
L2 sphere) and keeps it when the margin loss ``p_y - max_{j != y} p_j`` decreases. The
window area follows the paper's piecewise-constant schedule for ``p``. A sample leaves
the batch as soon as the oracle misclassifies it, and never spends more than
``queries`` queries (its clean query included).

Why our own code: the attack must talk to any `Oracle` (a local model, an ONNX session,
the gateway over HTTP) and count every query exactly; peer implementations call a
PyTorch module directly and query one image at a time or the whole batch regardless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion import _square_linf
from mlwarden.attacks.evasion._projection import (
    check_eps,
    check_norm,
    clip_to_bounds,
    lp_norm,
)
from mlwarden.core.contract import as_oracle
from mlwarden.core.errors import ParameterError
from mlwarden.core.oracle import Oracle
from mlwarden.core.progress import ProgressCallback
from mlwarden.core.seeding import make_generator

_TINY = 1e-12


@dataclass
class SquareResult(AttackResult):
    """`AttackResult` plus what a query attack reports per sample.

    ``queries_per_sample[i]``: oracle queries spent on sample ``i`` (clean query
    included); ``perturbation_norm[i]``: the ``norm`` of ``x_adv[i] - x[i]``.
    """

    queries_per_sample: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    perturbation_norm: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    @property
    def mean_queries_successful(self) -> float:
        """Mean queries over the samples the attack fooled (clean misclassifications excluded)."""
        fooled = self.success & self.clean_correct
        if not bool(fooled.any()):
            return float("nan")
        return float(self.queries_per_sample[fooled].float().mean())


class OutOfOracleBudget(Exception):
    """Internal signal: the oracle's own budget cannot answer the next batch."""


def as_score_oracle(model: Any, attack: str) -> Oracle:
    """The model as a probability oracle; a label-only oracle is the contract's error."""
    return as_oracle(model, "probabilities", by=attack)


def query_scores(oracle: Oracle, x: torch.Tensor) -> torch.Tensor:
    """Ask the oracle for scores of the batch ``x``.

    Raises `OutOfOracleBudget` *before* querying when the oracle's own budget cannot
    answer the whole batch, so the attack can stop cleanly with what it has. The shape
    and finiteness of the answer are checked by `Oracle.__call__` itself.
    """
    remaining = oracle.remaining
    if remaining is not None and remaining < len(x):
        raise OutOfOracleBudget
    return oracle(x).to(device=x.device, dtype=torch.float32)


def margin_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``s_y - max_{j != y} s_j`` per sample: <= 0 once the sample is misclassified."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - other


def p_schedule(p_init: float, iteration: int, n_iters: int) -> float:
    """Fraction of pixels changed at ``iteration``: the paper's piecewise-constant schedule.

    Halve ``p`` at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a
    10,000-query run, rescaled to a run of ``n_iters`` queries (as in the authors' code).
    """
    it = int(iteration / max(n_iters, 1) * 10000)
    for limit, divisor in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
        (10000, 512),
    ):
        if it <= limit:
            return p_init / divisor
    return p_init


def image_geometry(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """View an input shape as ``(channels, height, width)``.

    Images ``(C, H, W)`` stay as they are, ``(H, W)`` gets one channel, and a feature
    vector ``(D,)`` becomes a ``1 x D`` strip, where squares become segments.
    Leading axes beyond three fold into the channel axis.
    """
    if len(shape) == 1:
        return 1, 1, shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def window_sides(p: float, h: int, w: int, *, l2: bool) -> tuple[int, int]:
    """Side lengths of the square whose area is the fraction ``p`` of the image.

    The paper keeps the side within ``[1, H - 1]`` (Linf) and makes it odd and at
    least 3 (L2, so the two bumps have room). A strip (``H == 1``) uses a segment
    of ``p * W`` features instead.
    """
    if h == 1 or w == 1:
        length = max(h, w)
        side = min(max(int(round(p * length)), 1), max(length - 1, 1))
        return (1, side) if h == 1 else (side, 1)
    side = int(round(math.sqrt(p * h * w)))
    if l2:
        side = max(side, 3)
        side += 1 - side % 2
    return min(max(side, 1), h - 1), min(max(side, 1), w - 1)


def window_mask(
    n: int, h: int, w: int, sides: tuple[int, int], gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random window per sample: its mask ``(N, 1, H, W)`` and its top-left corner."""
    sh, sw = sides
    top = torch.randint(0, h - sh + 1, (n,), generator=gen).to(device)
    left = torch.randint(0, w - sw + 1, (n,), generator=gen).to(device)
    return _square_linf.mask_at(top, left, h, w, sides), top, left


def random_signs(
    shape: tuple[int, ...], gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Independent ``+-1`` entries."""
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(device, torch.float32)


@lru_cache(maxsize=64)
def _pseudo_gaussian(h: int, w: int) -> torch.Tensor:
    """Nested rectangles with weights ``1/(k+1)^2`` around the centre, unit L2 norm.

    The L2 update's building block ("pseudo_gaussian_pert_rectangles" in the paper's code).
    """
    delta = torch.zeros(h, w)
    if h == 0 or w == 0:
        return delta
    r, c = h // 2, w // 2
    for k in range(max(r + 1, c + 1)):
        delta[
            max(r - k, 0) : min(r - k + 2 * k + 1, h), max(c - k, 0) : min(c - k + 2 * k + 1, w)
        ] += 1.0 / (k + 1) ** 2
    return delta / delta.norm().clamp_min(_TINY)


@lru_cache(maxsize=64)
def bump_pair(h: int, w: int, split_rows: bool) -> torch.Tensor:
    """Two adjacent pseudo-Gaussian bumps of opposite sign filling an ``h x w`` window.

    ``split_rows`` splits along the height (the paper's pattern), otherwise along the
    width (the paper's random transpose). A window of one row or one column splits
    along its long axis; a single pixel is one bump of unit size.
    """
    if h == 1 and w == 1:
        return torch.ones(1, 1)
    if split_rows and h == 1:
        split_rows = False
    if not split_rows and w == 1:
        split_rows = True
    out = torch.zeros(h, w)
    if split_rows:
        out[: h // 2] = _pseudo_gaussian(h // 2, w)
        out[h // 2 :] = -_pseudo_gaussian(h - h // 2, w)
    else:
        out[:, : w // 2] = _pseudo_gaussian(h, w // 2)
        out[:, w // 2 :] = -_pseudo_gaussian(h, w - w // 2)
    return out / out.norm().clamp_min(_TINY)


def place_windows(
    patterns: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Write per-sample patterns ``(N, C, sh, sw)`` into zero images ``(N, C, H, W)``."""
    n, c, sh, sw = patterns.shape
    canvas = patterns.new_zeros(n, h, w, c)
    rows = top[:, None, None] + torch.arange(sh, device=top.device)[None, :, None]
    cols = left[:, None, None] + torch.arange(sw, device=top.device)[None, None, :]
    index = torch.arange(n, device=top.device)[:, None, None]
    canvas[index, rows, cols] = patterns.permute(0, 2, 3, 1)
    return canvas.permute(0, 3, 1, 2)


def _norm_hw(t: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel L2 norm over the spatial axes, shape ``(N, C, 1, 1)``."""
    return t.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()


def _norm_chw(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shape ``(N, 1, 1, 1)``."""
    return t.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()


class SquareAttack(Attack):
    """Score-based black-box attack in the Linf or L2 ball of radius ``eps``.

    ``queries`` is the per-sample budget, the clean query included; ``restarts``
    splits what is left of it into independent runs from fresh random starts for the
    samples still standing. ``p_init`` is the initial fraction of pixels in a square
    (the paper uses 0.05 on ImageNet-size inputs, 0.3-0.8 on MNIST/CIFAR). Untargeted.
    ``model`` is an `Oracle` returning scores, or a `Classifier` (queried as one).

    ``avoid_repeats`` (Linf): never re-ask a proposal the oracle already rejected from
    the same point, and let a sample rest once all of them were rejected (see
    `_square_linf`). ``None`` turns it on when the oracle is deterministic; a sample
    that rests at the smallest window then spends fewer than ``queries`` queries.
    """

    name = "square"

    def __init__(
        self,
        eps: float,
        norm: str = "linf",
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        seed: int = 0,
        avoid_repeats: bool | None = None,
    ) -> None:
        self.eps = check_eps(eps, allow_zero=False)
        self.norm = check_norm(norm)
        self.queries = _check_int("queries", queries)
        try:
            p = float(p_init)
        except (TypeError, ValueError):
            raise ParameterError(f"p_init must be a number in (0, 1], got {p_init!r}") from None
        if not 0.0 < p <= 1.0:
            raise ParameterError(f"p_init must be in (0, 1], got {p_init!r}")
        self.p_init = p
        self.restarts = _check_int("restarts", restarts)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        if avoid_repeats is not None and not isinstance(avoid_repeats, bool):
            raise ParameterError(
                f"avoid_repeats must be true, false or None, got {avoid_repeats!r}"
            )
        self.avoid_repeats = avoid_repeats

    # -- the attack --------------------------------------------------------
    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> SquareResult:
        oracle = as_score_oracle(model, "SquareAttack")
        avoid_repeats = oracle.deterministic if self.avoid_repeats is None else self.avoid_repeats
        gen = make_generator(self.seed)
        bounds = (float(oracle.spec.bounds[0]), float(oracle.spec.bounds[1]))
        shape = tuple(x.shape[1:])
        c, h, w = image_geometry(shape)
        x4 = x.detach().to(torch.float32).reshape(len(x), c, h, w).clone()
        y = y.to(x4.device)
        n = len(x4)
        used = torch.zeros(n, dtype=torch.long, device=x4.device)
        x_best = x4.clone()
        loss_best = torch.full((n,), float("inf"), device=x4.device)
        success = torch.zeros(n, dtype=torch.bool, device=x4.device)
        clean_correct = torch.zeros(n, dtype=torch.bool, device=x4.device)

        def ask(batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scores = query_scores(oracle, batch.reshape(len(batch), *shape))
            used[idx] += 1
            return margin_loss(scores, y[idx]), scores.argmax(dim=1) != y[idx]

        if n:
            try:
                idx = torch.arange(n, device=x4.device)
                _, fooled = ask(x4, idx)
                clean_correct = ~fooled
                success |= fooled
                budgets = _split_budget(self.queries - 1, self.restarts)
                total_iters = sum(budgets)
                done_iters = 0
                for budget in budgets:
                    standing = (~success).nonzero().flatten()
                    if budget == 0 or len(standing) == 0:
                        break
                    self._run(
                        ask,
                        x4,
                        standing,
                        budget,
                        bounds,
                        gen,
                        (x_best, loss_best, success),
                        avoid_repeats,
                        progress,
                        done_iters,
                        total_iters,
                    )
                    done_iters += budget
            except OutOfOracleBudget:
                pass  # the oracle's own budget ran out: report what was found so far
        progress(self.name, 1, 1)
        x_adv = x_best.reshape(x.shape).to(x.dtype)
        return SquareResult(
            x_adv=x_adv,
            success=success,
            clean_correct=clean_correct,
            queries=int(used.sum()),
            queries_per_sample=used,
            perturbation_norm=lp_norm(x_adv - x, self.norm),
        )

    def _run(
        self,
        ask: Any,
        x4: torch.Tensor,
        idx: torch.Tensor,
        budget: int,
        bounds: tuple[float, float],
        gen: torch.Generator,
        best: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        avoid_repeats: bool,
        progress: ProgressCallback,
        offset: int,
        total: int,
    ) -> None:
        """One run of at most ``budget`` queries per sample for the samples ``idx``.

        Updates ``best = (x_best, loss_best, success)`` in place for those samples: a
        sample's point is replaced when this run fools it or lowers its margin. With
        ``avoid_repeats`` (Linf, small inputs) proposals come from `_square_linf`:
        never the same one twice from the same point, and a sample whose every
        proposal was rejected rests until the window size changes.
        """
        x0 = x4[idx]
        cur = (
            self._init_linf(x0, gen, bounds)
            if self.norm == "linf"
            else self._init_l2(x0, gen, bounds)
        )
        loss, fooled = ask(cur, idx)
        self._keep(idx, cur, loss, fooled, *best)
        run_loss = loss
        c, h, w = x0.shape[1:]
        tried: torch.Tensor | None = None  # (standing, proposals) rejected from `cur`
        resting = torch.zeros(len(idx), dtype=torch.bool, device=x0.device)
        tracked_sides: tuple[int, int] | None = None
        it = 0
        while it < budget - 1:
            keep = ~fooled
            if not bool(keep.any()):
                break
            idx, x0, cur, run_loss, resting = (
                idx[keep],
                x0[keep],
                cur[keep],
                run_loss[keep],
                resting[keep],
            )
            tried = tried[keep] if tried is not None else None
            p = p_schedule(self.p_init, it, budget)
            sides = window_sides(p, h, w, l2=self.norm == "l2")
            size = (
                _square_linf.neighbourhood_size(c, h, w, sides)
                if avoid_repeats and self.norm == "linf"
                else None
            )
            choice = None
            rows: torch.Tensor | slice
            if size is None:
                tried, tracked_sides = None, None
                rows = slice(None)  # every standing sample; a view, not a copy
                if self.norm == "linf":
                    cand = self._step_linf(x0, cur, p, gen, bounds)
                else:
                    cand = self._step_l2(x0, cur, p, gen, bounds)
            else:
                if tried is None or sides != tracked_sides:
                    tried = torch.zeros(len(idx), size, dtype=torch.bool, device=x0.device)
                    resting.zero_()
                    tracked_sides = sides
                rows = (~resting).nonzero().flatten()
                available = (
                    _square_linf.changing_proposals(x0[rows], cur[rows], sides, self.eps, bounds)
                    & ~tried[rows]
                )
                stuck = ~available.any(dim=1)
                resting[rows[stuck]] = True
                rows, available = rows[~stuck], available[~stuck]
                if len(rows) == 0:  # every sample is at a local optimum for this size
                    nxt = self._next_size_change(it, budget, h, w, sides)
                    if nxt is None:
                        break
                    fooled = torch.zeros(len(idx), dtype=torch.bool, device=x0.device)
                    it = nxt
                    continue
                choice = _square_linf.draw(available, gen)
                cand = _square_linf.build(x0[rows], cur[rows], choice, sides, self.eps, bounds)
            loss, fooled_rows = ask(cand, idx[rows])
            better = (loss < run_loss[rows]) | fooled_rows
            cur[rows] = torch.where(better[:, None, None, None], cand, cur[rows])
            run_loss[rows] = torch.where(better, loss, run_loss[rows])
            if tried is not None and choice is not None:
                tried[rows[better]] = False
                tried[rows[~better], choice[~better]] = True
            fooled = torch.zeros(len(idx), dtype=torch.bool, device=x0.device)
            fooled[rows] = fooled_rows
            self._keep(idx[rows], cand, loss, fooled_rows, *best)
            if it % 10 == 0:
                progress(self.name, offset + it + 2, total)
            it += 1

    def _next_size_change(
        self, it: int, budget: int, h: int, w: int, sides: tuple[int, int]
    ) -> int | None:
        """First iteration after ``it`` whose Linf window differs from ``sides``."""
        for later in range(it + 1, budget - 1):
            if window_sides(p_schedule(self.p_init, later, budget), h, w, l2=False) != sides:
                return later
        return None

    @staticmethod
    def _keep(
        idx: torch.Tensor,
        cand: torch.Tensor,
        loss: torch.Tensor,
        fooled: torch.Tensor,
        x_best: torch.Tensor,
        loss_best: torch.Tensor,
        success: torch.Tensor,
    ) -> None:
        """Record the candidates that fool the oracle or beat the best margin so far."""
        take = fooled | (loss < loss_best[idx])
        if bool(take.any()):
            x_best[idx[take]] = cand[take]
            loss_best[idx[take]] = loss[take]
            success[idx[fooled]] = True

    # -- Linf ---------------------------------------------------------------
    def _init_linf(
        self, x0: torch.Tensor, gen: torch.Generator, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """Vertical stripes: one random ``+-eps`` per channel and column (the paper's init)."""
        n, c, _, w = x0.shape
        stripes = random_signs((n, c, 1, w), gen, x0.device) * self.eps
        return clip_to_bounds(x0 + stripes, bounds)

    def _step_linf(
        self,
        x0: torch.Tensor,
        cur: torch.Tensor,
        p: float,
        gen: torch.Generator,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        """Set one random square per sample to a random vertex ``+-eps`` per channel.

        As in the paper's code, a sign that would leave the window unchanged (after
        clipping) is redrawn, so no query is wasted on a point already evaluated.
        """
        n, c, h, w = x0.shape
        mask, _, _ = window_mask(n, h, w, window_sides(p, h, w, l2=False), gen, x0.device)
        delta = cur - x0
        pending = torch.ones(n, dtype=torch.bool, device=x0.device)
        for _ in range(16):
            signs = random_signs((n, c, 1, 1), gen, x0.device) * self.eps
            trial = torch.where(mask, signs, delta)
            unchanged = (
                (((clip_to_bounds(x0 + trial, bounds) - cur).abs() < 1e-7) | ~mask)
                .flatten(1)
                .all(dim=1)
            )
            delta = torch.where(pending[:, None, None, None], trial, delta)
            pending &= unchanged
            if not bool(pending.any()):
                break
        return clip_to_bounds(x0 + delta, bounds)

    # -- L2 -----------------------------------------------------------------
    def _init_l2(
        self, x0: torch.Tensor, gen: torch.Generator, bounds: tuple[float, float]
    ) -> torch.Tensor:
        """A grid of bump pairs with random signs, scaled to the L2 sphere (the paper's init).

        Tiles of side ``min(H, W) // 5`` (at least 1) are laid out from a centred offset,
        as in the authors' code; each tile gets a random orientation and each sample and
        channel a random sign.
        """
        n, c, h, w = x0.shape
        side = max(min(h, w) // 5, 1)
        sh, sw = min(side, h), min(side, w)
        # a strip (one row or column) is tiled from its start
        start_h = max((h - sh * 5) // 2, 0) if w > 1 else 0
        start_w = max((w - sw * 5) // 2, 0) if h > 1 else 0
        delta = x0.new_zeros(n, c, h, w)
        for top in range(start_h, h, sh):
            for left in range(start_w, w, sw):
                split_rows = bool(torch.randint(0, 2, (1,), generator=gen))
                tile = bump_pair(sh, sw, split_rows).to(x0.device)
                th, tw = min(sh, h - top), min(sw, w - left)
                signs = random_signs((n, c, 1, 1), gen, x0.device)
                delta[:, :, top : top + th, left : left + tw] += tile[:th, :tw] * signs
        delta = delta / _norm_chw(delta).clamp_min(_TINY) * self.eps
        return clip_to_bounds(x0 + delta, bounds)

    def _step_l2(
        self,
        x0: torch.Tensor,
        cur: torch.Tensor,
        p: float,
        gen: torch.Generator,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        """Move the perturbation mass of a second window into a new bump pair in the first.

        The new window's content keeps its old direction plus a fresh bump pair, rescaled
        so that the whole perturbation stays on the ``eps`` sphere (the paper's update).
        """
        n, c, h, w = x0.shape
        sides = window_sides(p, h, w, l2=True)
        mask1, top, left = window_mask(n, h, w, sides, gen, x0.device)
        mask2, _, _ = window_mask(n, h, w, sides, gen, x0.device)
        delta = cur - x0
        norm_window1 = _norm_hw(delta * mask1)
        norm_image = _norm_chw(delta)
        union = mask1 | mask2
        norm_union = _norm_hw(delta * union)

        split_rows = torch.randint(0, 2, (n,), generator=gen).bool().to(x0.device)
        rows_first = bump_pair(*sides, True).to(x0.device)
        cols_first = bump_pair(*sides, False).to(x0.device)
        pattern = torch.where(split_rows[:, None, None], rows_first, cols_first)
        pattern = pattern[:, None] * random_signs((n, c, 1, 1), gen, x0.device)
        fresh = place_windows(pattern, top, left, h, w)

        new = fresh + delta * mask1 / (norm_window1 + 1e-10)
        room = (torch.clamp(self.eps**2 - norm_image**2, min=0.0) / c + norm_union**2).sqrt()
        new = new / _norm_hw(new).clamp_min(_TINY) * room
        delta = torch.where(union, 0.0, delta) + new * mask1
        delta = delta / _norm_chw(delta).clamp_min(_TINY) * self.eps
        return clip_to_bounds(x0 + delta, bounds)


def _split_budget(total: int, parts: int) -> list[int]:
    """Split ``total`` queries into ``parts`` runs, the first runs taking the remainder."""
    base, extra = divmod(max(total, 0), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


__all__ = ["SquareAttack", "SquareResult", "margin_loss", "p_schedule"]
