"""HopSkipJump: decision-based black-box evasion that needs only the oracle's labels.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based
Attack", IEEE S&P 2020 (arXiv:1904.02144).

From an adversarial starting point (uniform noise the oracle misclassifies, or another
sample of the batch with a suitable label), each iteration

1. estimates the direction of the decision boundary's normal at the current boundary
   point by Monte Carlo: the sign of the oracle's decision at ``B_t`` random points of
   radius ``delta`` around it, with the paper's baseline subtraction;
2. jumps along that direction with a geometric step search (``dist / sqrt(t)``,
   halved until the point is still adversarial);
3. returns to the boundary with a binary search between the clean input and the new
   point (L2: along the segment; Linf: by shrinking a box around the clean input).

HSJ minimises the perturbation, so ``success`` means "misclassified and, when ``eps`` is
given, within ``eps``"; `HopSkipJumpResult.perturbation_norm` reports the distance found.

Why our own code: every query goes through the public `Oracle` API (local model, ONNX
session or the gateway over HTTP) and is counted per sample against the budget; all
samples advance together, with one oracle call per phase, instead of one image at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.attacks.base import Attack, AttackResult
from mlwarden.attacks.evasion._projection import check_eps, check_norm, clip_to_bounds
from mlwarden.core.contract import as_oracle
from mlwarden.core.errors import OracleError, ParameterError
from mlwarden.core.oracle import Oracle
from mlwarden.core.progress import ProgressCallback
from mlwarden.core.seeding import make_generator

_TINY = 1e-12
# Random-noise starting points tried per sample before falling back to batch samples
# (ART's ``init_size``); each try costs one query.
_INIT_TRIALS = 100
# Halvings of the geometric step before giving up on an iteration.
_MAX_HALVINGS = 25
# Rows of (samples x evaluations x features) materialised at once in the gradient step.
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class HopSkipJumpResult(AttackResult):
    """`AttackResult` plus the per-sample distance to the boundary and query counts.

    ``perturbation_norm[i]``: norm of the smallest adversarial perturbation found for
    sample ``i`` (0 when the clean input is already adversarial, ``inf`` when no
    adversarial point was found). ``queries_per_sample[i]``: oracle queries spent on it.
    """

    queries_per_sample: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    perturbation_norm: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def success_at(self, eps: float) -> torch.Tensor:
        """Success mask had the attack been asked for perturbations within ``eps``."""
        return self.perturbation_norm <= eps


class _OutOfOracleBudget(Exception):
    """Internal signal: the oracle's own budget cannot answer the next batch."""


def as_label_oracle(model: Any) -> Oracle:
    """The model as a label oracle (a classifier or a score oracle answers its top-1 only)."""
    return as_oracle(model, "labels", by="HopSkipJump")


def query_labels(oracle: Oracle, x: torch.Tensor) -> torch.Tensor:
    """Top-1 labels of the batch ``x``, checked; refuse to start a batch the budget cannot end."""
    remaining = oracle.remaining
    if remaining is not None and remaining < len(x):
        raise _OutOfOracleBudget
    out = oracle.labels(x)
    if not isinstance(out, torch.Tensor) or out.shape != (len(x),):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise OracleError(f"oracle returned {shape} labels for {len(x)} inputs")
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        raise OracleError("oracle returned NaN or infinite labels")
    out = out.long().to(x.device)
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= oracle.num_classes):
        raise OracleError(
            f"oracle returned labels in [{int(out.min())}, {int(out.max())}], outside the "
            f"{oracle.num_classes} classes of its spec"
        )
    return out


def _dist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row distance of flat batches."""
    d = a - b
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


class HopSkipJump(Attack):
    """Decision-based attack minimising the L2 or Linf perturbation through labels only.

    ``queries`` is the per-sample budget (clean query included); ``max_iter`` the
    number of HSJ iterations; ``init_evals``/``max_evals`` the Monte Carlo sample size
    ``B_t = min(init_evals * sqrt(t), max_evals)``; ``gamma`` sets the binary-search
    tolerance ``theta = gamma / d^{3/2}`` (L2) or ``gamma / d^2`` (Linf).
    ``targeted=True`` reads ``y`` as target classes. With ``eps`` a sample counts as
    fooled, and stops costing queries, once its perturbation is within ``eps``;
    samples not brought within ``eps`` come back unperturbed.
    """

    name = "hopskipjump"

    def __init__(
        self,
        norm: str = "l2",
        queries: int = 5000,
        max_iter: int = 50,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        targeted: bool = False,
        seed: int = 0,
        eps: float | None = None,
    ) -> None:
        self.norm = check_norm(norm)
        self.queries = _check_int("queries", queries)
        self.max_iter = _check_int("max_iter", max_iter, minimum=0)
        self.init_evals = _check_int("init_evals", init_evals)
        self.max_evals = _check_int("max_evals", max_evals)
        if self.max_evals < self.init_evals:
            raise ParameterError(f"max_evals ({max_evals}) must be >= init_evals ({init_evals})")
        self.gamma = check_eps(gamma, name="gamma", allow_zero=False)
        self.targeted = bool(targeted)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.eps = None if eps is None else check_eps(eps, allow_zero=False)

    # -- the attack --------------------------------------------------------
    def _attack(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, progress: ProgressCallback
    ) -> HopSkipJumpResult:
        run = _Run(self, as_label_oracle(model), x, y, progress)
        try:
            run.execute()
        except _OutOfOracleBudget:
            pass  # the oracle's own budget ran out: report the best points found so far
        return run.result()


class _Run:
    """State of one HSJ call: per-sample best adversarial points, distances and budgets."""

    def __init__(
        self,
        attack: HopSkipJump,
        oracle: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        progress: ProgressCallback,
    ) -> None:
        self.a = attack
        self.oracle = oracle
        self.progress = progress
        self.shape = tuple(x.shape[1:])
        self.input = x
        self.x = x.detach().to(torch.float32).reshape(len(x), -1).clone()
        self.y = y.to(self.x.device)
        self.n, self.d = self.x.shape
        self.bounds = (float(oracle.spec.bounds[0]), float(oracle.spec.bounds[1]))
        self.gen = make_generator(attack.seed)
        dev = self.x.device
        self.used = torch.zeros(self.n, dtype=torch.long, device=dev)
        self.best = self.x.clone()
        self.best_dist = torch.full((self.n,), float("inf"), device=dev)
        self.clean_correct = torch.zeros(self.n, dtype=torch.bool, device=dev)
        self.clean_labels = torch.full((self.n,), -1, dtype=torch.long, device=dev)
        d = max(self.d, 1)
        if attack.norm == "l2":
            self.theta = attack.gamma / (d * math.sqrt(d))
        else:
            self.theta = attack.gamma / (d * d)

    # -- queries -------------------------------------------------------------
    def adversarial(self, batch: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Ask the oracle about ``batch`` (rows belong to samples ``idx``); count the queries."""
        labels = query_labels(self.oracle, batch.reshape(len(batch), *self.shape))
        self.used.index_add_(0, idx, torch.ones_like(idx))
        return self._is_adversarial(labels, self.y[idx])

    def _is_adversarial(self, labels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return labels == y if self.a.targeted else labels != y

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.a.queries - self.used[idx]

    def done(self) -> torch.Tensor:
        """Samples that need no more work: within ``eps`` (when given) or out of budget."""
        finished = self.used >= self.a.queries
        if self.a.eps is not None:
            finished |= self.best_dist <= self.a.eps
        return finished

    def record(self, idx: torch.Tensor, points: torch.Tensor, dist: torch.Tensor) -> None:
        """Keep verified adversarial points that are closer than the best so far."""
        better = dist < self.best_dist[idx]
        if bool(better.any()):
            self.best[idx[better]] = points[better]
            self.best_dist[idx[better]] = dist[better]

    # -- phases ----------------------------------------------------------------
    def execute(self) -> None:
        if self.n == 0:
            return
        everyone = torch.arange(self.n, device=self.x.device)
        self.clean_labels = query_labels(self.oracle, self.x.reshape(self.n, *self.shape))
        self.used += 1
        clean_adv = self._is_adversarial(self.clean_labels, self.y)
        # targeted: "correct" means the clean sample is not already the target class
        self.clean_correct = ~clean_adv
        self.best_dist[clean_adv] = 0.0
        idx, start = self.starting_points(everyone[~clean_adv])
        if len(idx) == 0:
            return
        # the authors' initialisation: blend towards the start (tolerance 1e-3), then
        # project onto the boundary in the attack's norm
        cur = self.binary_search(idx, start, "l2", tolerance=1e-3)
        cur = self.binary_search(idx, cur, self.a.norm)
        dist = _dist(cur, self.x[idx], self.a.norm)
        self.record(idx, cur, dist)
        for t in range(1, self.a.max_iter + 1):
            keep = ~self.done()[idx]
            idx, cur, dist = idx[keep], cur[keep], dist[keep]
            if len(idx) == 0:
                break
            cur, dist, idx = self.iterate(t, idx, cur, dist)
            self.progress(self.a.name, t, self.a.max_iter)
        self.progress(self.a.name, self.a.max_iter, self.a.max_iter)

    def starting_points(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An adversarial point per sample: uniform noise first, then other batch samples."""
        low, high = self.bounds
        start = self.x[idx].clone()
        found = torch.zeros(len(idx), dtype=torch.bool, device=self.x.device)
        for _ in range(_INIT_TRIALS):
            ask = ~found & (self.left(idx) > 0)
            if not bool(ask.any()):
                break
            noise = torch.rand(int(ask.sum()), self.d, generator=self.gen).to(self.x.device)
            noise = low + (high - low) * noise
            ok = self.adversarial(noise, idx[ask])
            rows = ask.nonzero().flatten()[ok]
            start[rows] = noise[ok]
            found[rows] = True
        if not bool(found.all()):
            # fall back on the batch's own samples whose clean label (already queried)
            # is adversarial for this sample; take the nearest, no query needed
            clean_labels = self.clean_labels
            for row in (~found).nonzero().flatten().tolist():
                i = int(idx[row])
                if self.a.targeted:
                    usable = clean_labels == self.y[i]
                else:
                    usable = clean_labels != self.y[i]
                if bool(usable.any()):
                    cand = usable.nonzero().flatten()
                    j = cand[_dist(self.x[cand], self.x[i : i + 1], self.a.norm).argmin()]
                    start[row] = self.x[j]
                    found[row] = True
        return idx[found], start[found]

    def binary_search(
        self,
        idx: torch.Tensor,
        adv: torch.Tensor,
        norm: str,
        tolerance: float | None = None,
    ) -> torch.Tensor:
        """Move the adversarial points ``adv`` to the boundary towards the clean inputs.

        L2: search ``alpha`` on the segment ``(1 - alpha) x + alpha adv``. Linf: search the
        box radius ``alpha`` in ``clip(adv, x - alpha, x + alpha)``. The upper end is
        always a point the oracle called adversarial, so stopping early (budget) is safe.
        """
        x0 = self.x[idx]
        if norm == "l2":
            highs = torch.ones(len(idx), device=x0.device)
            thresholds = torch.full_like(highs, self.theta if tolerance is None else tolerance)
        else:
            highs = _dist(adv, x0, "linf")
            theta = self.theta if tolerance is None else tolerance
            thresholds = torch.clamp(highs * theta, max=theta)
        lows = torch.zeros_like(highs)
        for _ in range(64):
            todo = ((highs - lows) > thresholds) & (self.left(idx) > 0)
            if not bool(todo.any()):
                break
            mids = (highs[todo] + lows[todo]) / 2
            ok = self.adversarial(_project(x0[todo], adv[todo], mids, norm), idx[todo])
            rows = todo.nonzero().flatten()
            highs[rows[ok]] = mids[ok]
            lows[rows[~ok]] = mids[~ok]
        return _project(x0, adv, highs, norm)

    def iterate(
        self, t: int, idx: torch.Tensor, cur: torch.Tensor, dist: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One HSJ iteration for the samples ``idx`` sitting on the boundary at ``cur``."""
        a = self.a
        low, high = self.bounds
        if t == 1:
            delta = torch.full_like(dist, 0.1 * (high - low))
        elif a.norm == "l2":
            delta = math.sqrt(self.d) * self.theta * dist
        else:
            delta = self.d * self.theta * dist
        delta = delta.clamp_min(_TINY)
        evals = min(int(a.init_evals * math.sqrt(t)), a.max_evals)
        # leave room for a step and a binary search after the gradient estimate
        reserve = 2 + max(int(math.ceil(math.log2(1.0 / self.theta))), 1)
        evals_i = torch.clamp(self.left(idx) - reserve, max=evals)
        keep = evals_i >= 1
        if not bool(keep.all()):
            # too little budget for a meaningful estimate: these samples stop here
            idx, cur, dist, delta, evals_i = (
                idx[keep],
                cur[keep],
                dist[keep],
                delta[keep],
                evals_i[keep],
            )
            if len(idx) == 0:
                return cur, dist, idx
        grad = self.gradient_direction(idx, cur, delta, evals_i)
        update = grad.sign() if a.norm == "linf" else grad

        # geometric progression of the step size, from dist / sqrt(t)
        step = dist / math.sqrt(t)
        moved = torch.zeros(len(idx), dtype=torch.bool, device=cur.device)
        new = cur.clone()
        for _ in range(_MAX_HALVINGS):
            todo = ~moved & (self.left(idx) > 0)
            if not bool(todo.any()):
                break
            cand = clip_to_bounds(cur[todo] + step[todo, None] * update[todo], self.bounds)
            ok = self.adversarial(cand, idx[todo])
            rows = todo.nonzero().flatten()
            new[rows[ok]] = cand[ok]
            moved[rows[ok]] = True
            step[rows[~ok]] /= 2
        if bool(moved.any()):
            rows = moved.nonzero().flatten()
            new[rows] = self.binary_search(idx[rows], new[rows], a.norm)
            new_dist = _dist(new[rows], self.x[idx[rows]], a.norm)
            self.record(idx[rows], new[rows], new_dist)
            cur = cur.clone()
            cur[rows] = new[rows]
            dist = dist.clone()
            dist[rows] = new_dist
        return cur, dist, idx

    def gradient_direction(
        self, idx: torch.Tensor, cur: torch.Tensor, delta: torch.Tensor, evals: torch.Tensor
    ) -> torch.Tensor:
        """Monte Carlo estimate of the boundary normal at ``cur`` (the paper's eq. 9-10).

        ``evals[i]`` random unit directions per sample (Gaussian for L2, uniform cube for
        Linf), clipped to the input box; decisions ``+-1`` minus their mean (baseline)
        weight the directions, except when all decisions agree.
        """
        grad = torch.zeros_like(cur)
        per_row = max(self.d, 1)
        start = 0
        while start < len(idx):
            # a chunk of samples whose evaluations fit in memory
            stop, total = start, 0
            while stop < len(idx) and (
                stop == start or (total + int(evals[stop])) * per_row <= _CHUNK_ELEMENTS
            ):
                total += int(evals[stop])
                stop += 1
            sl = slice(start, stop)
            counts = evals[sl]
            owner = torch.repeat_interleave(torch.arange(stop - start, device=cur.device), counts)
            if self.a.norm == "l2":
                rv = torch.randn(total, self.d, generator=self.gen)
            else:
                rv = torch.rand(total, self.d, generator=self.gen) * 2 - 1
            rv = rv.to(cur.device)
            rv = rv / rv.norm(dim=1, keepdim=True).clamp_min(_TINY)
            base = cur[sl][owner]
            step = delta[sl][owner, None]
            probes = clip_to_bounds(base + step * rv, self.bounds)
            rv = (probes - base) / step
            fval = self.adversarial(probes, idx[sl][owner]).float() * 2 - 1
            mean = torch.zeros(stop - start, device=cur.device).index_add_(0, owner, fval)
            mean = mean / counts.float()
            agree = mean.abs() == 1.0
            weight = torch.where(agree[owner], fval, fval - mean[owner])
            g = torch.zeros(stop - start, self.d, device=cur.device)
            g.index_add_(0, owner, weight[:, None] * rv)
            grad[sl] = g / counts.float()[:, None]
            start = stop
        return grad / grad.norm(dim=1, keepdim=True).clamp_min(_TINY)

    # -- result -------------------------------------------------------------------
    def result(self) -> HopSkipJumpResult:
        found = torch.isfinite(self.best_dist)
        success = found.clone()
        if self.a.eps is not None:
            success &= self.best_dist <= self.a.eps
        x_adv = torch.where(success[:, None], self.best, self.x)
        return HopSkipJumpResult(
            x_adv=x_adv.reshape(self.input.shape).to(self.input.dtype),
            success=success,
            clean_correct=self.clean_correct,
            queries=int(self.used.sum()),
            queries_per_sample=self.used.clone(),
            perturbation_norm=self.best_dist.clone(),
        )


def _project(x0: torch.Tensor, adv: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """The point at parameter ``alpha`` between ``x0`` and ``adv`` (see `binary_search`)."""
    a = alpha[:, None]
    if norm == "l2":
        return (1 - a) * x0 + a * adv
    return torch.minimum(torch.maximum(adv, x0 - a), x0 + a)


def _check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


__all__ = ["HopSkipJump", "HopSkipJumpResult"]
