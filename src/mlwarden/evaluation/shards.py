"""Evaluations split into shards by sample range, run by any executor, merged into one result.

DESIGN.md ("Scale"): an evaluation too large for one process is cut into contiguous sample
ranges that a cluster engine runs as independent tasks; the shard results merge back into
the one result (and so the one `Report`) the single-process run would give. This module is
the engine-independent half:

* `plan_shards` cuts ``n`` samples into ranges of ``shard_size``. The plan depends on ``n``
  and ``shard_size`` only, never on how many workers there are, and each shard's seed is
  derived from the run's seed and the shard's first sample (`shard_seed`), so a result does
  not change with the size of the cluster, the order in which shards finish, or a retry.
* `robustness_shard` is the work of one shard (a pure function of the model and its rows);
  `merge_robustness` puts shards back together and fails closed when a sample is missing or
  present twice (a retried task that reported twice, a lost one): a report is never built
  from part of the data.
* `ShardExecutor` is what an engine provides: run a shard function on every shard, with the
  model available where the function runs. `LocalExecutor` runs them in this process;
  `mlwarden.audit.distributed.RayExecutor` runs them as Ray tasks.

Equality with the unsharded run: a shard attacks its own rows with its own generator, so the
merged robust accuracy equals `evaluate_robustness` on all rows exactly when every attack is
per-sample deterministic (no random start: FGSM, PGD with ``random_start=False``, DeepFool);
with random starts it is the same *kind* of estimate, reproducible for a seed and a shard
size, but drawn with other random numbers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mlwarden.core.errors import DataError, MlwardenError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress

if TYPE_CHECKING:
    import torch

    from mlwarden.attacks.base import Attack
    from mlwarden.evaluation.robustness import AttackCost, RobustnessResult

DEFAULT_SHARD_SIZE = 128
"""Samples per shard: large enough that a task's fixed cost (a Ray task is milliseconds,
the first load of the model on a worker about a second) stays small against its attacks,
small enough that a 500-sample audit keeps two workers busy."""

R = TypeVar("R")


@dataclass(frozen=True)
class Shard:
    """Samples ``start`` to ``stop`` (exclusive) of the evaluation set, and their seed."""

    start: int
    stop: int
    seed: int

    def __len__(self) -> int:
        return self.stop - self.start


class ShardError(MlwardenError):
    """Shards could not be merged into one result (a sample missing or duplicated), or a
    shard could not be run; the audit stops rather than report on part of the data."""


def shard_seed(seed: int, start: int) -> int:
    """The seed of the shard that starts at sample ``start`` of a run seeded ``seed``.

    A hash rather than ``seed + start``: runs seeded 0 and 1 would otherwise share all but
    one of their shard seeds. SHA-256 rather than ``hash()``, which changes between
    interpreters.
    """
    digest = hashlib.sha256(f"mlwarden-shard:{int(seed)}:{int(start)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_shards(n: int, shard_size: int = DEFAULT_SHARD_SIZE, *, seed: int = 0) -> list[Shard]:
    """Contiguous ranges of at most ``shard_size`` samples covering ``0..n-1`` once."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ParameterError(f"shard_size must be a positive integer, got {shard_size!r}")
    if n < 1:
        raise DataError("cannot shard an empty evaluation set")
    return [
        Shard(start, min(start + shard_size, n), shard_seed(seed, start))
        for start in range(0, n, shard_size)
    ]


class ShardExecutor(Protocol):
    """An engine that runs ``fn(model, shard, **inputs)`` for every shard.

    The executor owns the model (it knows how to make it available where the work runs) and
    returns one result per shard, in the order of ``shards``.
    """

    engine: str

    def map_shards(
        self,
        fn: Callable[..., R],
        shards: Sequence[Shard],
        inputs: Mapping[str, Any],
        *,
        progress: ProgressCallback = null_progress,
        task: str = "shards",
    ) -> list[R]:
        """Run ``fn`` on every shard and return the results in shard order."""
        ...


@dataclass
class LocalExecutor:
    """Shards run one after another in this process, on an already loaded model.

    The reference for any other engine: the same plan gives the same merged result here and
    on a cluster.
    """

    model: Any
    engine: str = "local"

    def map_shards(
        self,
        fn: Callable[..., R],
        shards: Sequence[Shard],
        inputs: Mapping[str, Any],
        *,
        progress: ProgressCallback = null_progress,
        task: str = "shards",
    ) -> list[R]:
        results: list[R] = []
        for done, shard in enumerate(shards):
            progress(task, done, len(shards))
            results.append(fn(self.model, shard, **inputs))
        progress(task, len(shards), len(shards))
        return results


# -- robustness ---------------------------------------------------------------------------------
@dataclass
class RobustnessShard:
    """What one shard of a robustness evaluation sends back (tensors on the CPU)."""

    start: int
    stop: int
    indices: torch.Tensor
    """The global sample indices this shard evaluated, as the worker saw them."""
    clean_correct: torch.Tensor
    robust: dict[float, torch.Tensor]
    x_adv: dict[float, torch.Tensor]
    costs: list[AttackCost] = field(default_factory=list)
    seconds: float = 0.0


def _rows(values: Any, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a tensor or of a (read-only, object-store) NumPy array."""
    import numpy as np
    import torch

    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.array(values[start:stop], copy=True))
    return values[start:stop]


def robustness_shard(
    model: Any,
    shard: Shard,
    *,
    x: Any,
    y: Any,
    eps: Sequence[float],
    preset: str | None,
    norm: str,
    steps: int | None,
    queries: int | None,
    batch_size: int,
    attacks: dict[float, list[Attack]] | None = None,
) -> RobustnessShard:
    """`evaluate_robustness` on rows ``shard.start:shard.stop`` with the shard's own seed."""
    from mlwarden.evaluation.robustness import evaluate_robustness

    if not 0 <= shard.start < shard.stop <= len(x):
        raise ShardError(f"shard {shard.start}:{shard.stop} lies outside the {len(x)} samples")
    import torch

    xs, ys = _rows(x, shard.start, shard.stop), _rows(y, shard.start, shard.stop)
    kwargs: dict[str, Any] = {"attacks": attacks} if attacks is not None else {"preset": preset}
    part = evaluate_robustness(
        model,
        xs,
        ys,
        list(eps),
        norm=norm,
        steps=steps,
        queries=queries,
        seed=shard.seed,
        batch_size=batch_size,
        **kwargs,
    )
    return RobustnessShard(
        start=shard.start,
        stop=shard.stop,
        indices=torch.arange(shard.start, shard.stop),
        clean_correct=part.clean_correct.cpu(),
        robust={e: r.cpu() for e, r in part.robust.items()},
        x_adv={e: a.cpu() for e, a in part.x_adv.items()},
        costs=part.costs,
        seconds=part.seconds,
    )


def check_coverage(parts: Sequence[RobustnessShard], n: int) -> None:
    """Fail closed unless the shards' indices cover ``0..n-1`` exactly once."""
    import torch

    if not parts:
        raise ShardError(f"no shard came back for {n} samples")
    seen = torch.cat([p.indices.flatten().long() for p in parts])
    counts = torch.bincount(seen.clamp(0, n), minlength=n + 1)
    outside = int(((seen < 0) | (seen >= n)).sum())
    missing = (counts[:n] == 0).nonzero().flatten().tolist()
    twice = (counts[:n] > 1).nonzero().flatten().tolist()
    for p in parts:
        if len(p.indices) != len(p.clean_correct) or any(
            len(r) != len(p.indices) for r in p.robust.values()
        ):
            raise ShardError(
                f"shard {p.start}:{p.stop} returned rows that do not match its indices"
            )
    if missing or twice or outside:
        raise ShardError(
            "the shards do not cover the evaluation set exactly once: "
            f"{len(missing)} sample(s) missing (first {missing[:5]}), "
            f"{len(twice)} duplicated (first {twice[:5]}), {outside} outside 0..{n - 1}; "
            "no report is built from part of the data"
        )


def merge_costs(parts: Sequence[RobustnessShard], eps: Sequence[float]) -> list[AttackCost]:
    """One cost row per (budget, attack), summed over shards, in the ensemble's order.

    A shard's rows at one budget are a prefix of the preset's attacks (the ensemble stops
    once every sample is fooled), so the k-th row of a budget is the same attack in every
    shard that has it.
    """
    from mlwarden.evaluation.robustness import AttackCost

    merged: dict[tuple[float, int], AttackCost] = {}
    for part in parts:
        position: dict[float, int] = {}
        for cost in part.costs:
            k = position.get(cost.eps, 0)
            position[cost.eps] = k + 1
            row = merged.get((cost.eps, k))
            if row is None:
                row = merged[(cost.eps, k)] = AttackCost(cost.attack, cost.eps, 0, 0, 0, 0, 0.0)
            elif row.attack != cost.attack:
                raise ShardError(
                    f"shards disagree on attack {k + 1} at eps {cost.eps:g}: "
                    f"'{row.attack}' and '{cost.attack}'"
                )
            row.attacked += cost.attacked
            row.fooled += cost.fooled
            row.gradient_evaluations += cost.gradient_evaluations
            row.queries += cost.queries
            row.seconds += cost.seconds
    order = {e: i for i, e in enumerate(eps)}
    keys = sorted(merged, key=lambda k: (order.get(k[0], len(order)), k[1]))
    return [merged[key] for key in keys]


def merge_robustness(
    parts: Sequence[RobustnessShard],
    *,
    y: torch.Tensor,
    preset: str,
    norm: str,
    eps: Sequence[float],
    class_names: Sequence[str],
    seconds: float = 0.0,
) -> RobustnessResult:
    """The `RobustnessResult` of all shards, in sample order, after `check_coverage`."""
    import torch

    from mlwarden.evaluation.robustness import RobustnessResult

    check_coverage(parts, len(y))
    ordered = sorted(parts, key=lambda p: p.start)
    budgets = list(eps)
    for p in ordered:
        if sorted(p.robust) != sorted(budgets):
            raise ShardError(f"shard {p.start}:{p.stop} evaluated other budgets than {budgets}")
    return RobustnessResult(
        preset=preset,
        norm=norm,
        eps=budgets,
        y=y,
        clean_correct=torch.cat([p.clean_correct for p in ordered]).to(y.device),
        robust={e: torch.cat([p.robust[e] for p in ordered]).to(y.device) for e in budgets},
        x_adv={e: torch.cat([p.x_adv[e] for p in ordered]) for e in budgets},
        class_names=tuple(class_names),
        costs=merge_costs(ordered, budgets),
        seconds=seconds,
    )


def evaluate_robustness_sharded(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float] | float,
    *,
    executor: ShardExecutor,
    preset: str | None = None,
    norm: str = "linf",
    steps: int | None = None,
    queries: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    attacks: dict[float, list[Attack]] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: ProgressCallback = null_progress,
) -> RobustnessResult:
    """`evaluate_robustness` cut into shards of ``shard_size`` samples run by ``executor``.

    Everything that can be refused is refused here, before any shard is sent: the preset
    against the model, the budgets, the data against the model's spec.
    """
    from mlwarden.attacks.evasion.registry import DEFAULT_PRESET
    from mlwarden.evaluation.robustness import check_evaluation

    start = time.perf_counter()
    preset = preset or DEFAULT_PRESET
    chosen, norm, budgets = check_evaluation(model, x, y, eps, preset, norm, attacks)
    shards = plan_shards(len(x), shard_size, seed=seed)
    inputs = {
        "x": x,
        "y": y,
        "eps": budgets,
        "preset": preset,
        "norm": norm,
        "steps": steps,
        "queries": queries,
        "batch_size": batch_size,
        "attacks": attacks,
    }
    parts = executor.map_shards(
        robustness_shard, shards, inputs, progress=progress, task="robustness: shards"
    )
    return merge_robustness(
        parts,
        y=y,
        preset=chosen.name if chosen is not None else "custom",
        norm=norm,
        eps=budgets,
        class_names=model.spec.class_names,
        seconds=time.perf_counter() - start,
    )
