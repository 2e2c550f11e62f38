"""Model extraction by knockoff: train a copy from the answers of a query oracle.

Orekondy, Schiele and Fritz, "Knockoff Nets" (CVPR 2019): query the victim with a
transfer set and train a copy on its outputs (soft labels when scores are exposed,
hard labels otherwise). The transfer set comes from one of three strategies:

- ``random``: uniform noise inside the input bounds (an attacker with no data);
- ``natural``: in-domain samples the attacker owns (unlabelled);
- ``synthetic``: Jacobian-based augmentation (Papernot et al., AsiaCCS 2017): start
  from a small seed set and grow it along the sign of the copy's input gradient,
  which concentrates queries near the victim's decision boundaries.

Because it only uses the `Oracle` API, the same attack measures a local model, an
ONNX session or a gateway over HTTP, where output hardening and monitoring should
cost the attacker agreement per query. An oracle that refuses (blocked key, budget)
ends the attack early and the copy is trained on what was gathered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from mlwarden.attacks.inference.lira import fresh_copy
from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, OracleError, ParameterError
from mlwarden.core.oracle import Oracle
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator

Strategy = Literal["random", "natural", "synthetic"]


@dataclass
class ExtractionPoint:
    queries: int
    agreement: float
    accuracy: float | None


@dataclass
class ExtractionResult:
    copy: Classifier
    queries: int
    agreement: float
    accuracy: float | None
    curve: list[ExtractionPoint] = field(default_factory=list)
    stopped: str | None = None  # why the oracle stopped answering early, if it did
    text_copy: Any = None
    """For a text victim: the thief's encoder plus ``copy`` (a head over its embeddings)."""


def default_architecture(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The attacker's guess when none is given: a two-layer MLP over flattened inputs."""
    import math

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(shape), 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


class KnockoffExtraction:
    """Steal a model within a query budget; report agreement against queries spent."""

    def __init__(
        self,
        budget: int,
        strategy: Strategy = "natural",
        *,
        architecture: nn.Module | Callable[[], nn.Module] | None = None,
        epochs: int = 40,
        lr: float = 1e-3,
        batch_size: int = 64,
        query_batch: int = 64,
        checkpoints: int = 4,
        synthetic_seed_size: int = 50,
        synthetic_step: float = 0.1,
        seed: int = 0,
    ) -> None:
        if budget <= 0:
            raise ParameterError(f"budget must be a positive number of queries, got {budget}")
        if strategy not in ("random", "natural", "synthetic"):
            raise ParameterError(f"strategy must be random, natural or synthetic, got {strategy!r}")
        for name, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("query_batch", query_batch),
            ("checkpoints", checkpoints),
            ("synthetic_seed_size", synthetic_seed_size),
        ):
            if value <= 0:
                raise ParameterError(f"{name} must be positive, got {value}")
        if not lr > 0 or not synthetic_step > 0:
            raise ParameterError("lr and synthetic_step must be positive")
        self.budget = budget
        self.strategy = strategy
        self.architecture = architecture
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.query_batch = query_batch
        self.checkpoints = checkpoints
        self.synthetic_seed_size = synthetic_seed_size
        self.synthetic_step = synthetic_step
        self.seed = seed

    # -- the attack -----------------------------------------------------------
    def extract(
        self,
        oracle: Oracle,
        *,
        natural: torch.Tensor | None = None,
        eval_x: torch.Tensor | None = None,
        eval_labels: torch.Tensor | None = None,
        eval_y: torch.Tensor | None = None,
        progress: ProgressCallback = null_progress,
    ) -> ExtractionResult:
        """Run the attack. ``eval_labels`` are the victim's labels on ``eval_x`` (queried
        from the oracle, outside the budget, when not given); ``eval_y`` the true labels."""
        spec = oracle.spec
        if self.strategy == "natural" and natural is None:
            raise DataError(
                "the natural strategy needs the attacker's own in-domain data (natural=)"
            )
        if natural is not None:
            spec.validate_batch(natural, what="natural query data")
        gen = make_generator(self.seed)
        if eval_x is not None and eval_labels is None:
            eval_labels = oracle.labels(eval_x).cpu()
        marks = sorted(
            {
                max(1, round(self.budget * (i + 1) / self.checkpoints))
                for i in range(self.checkpoints)
            }
        )
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        curve: list[ExtractionPoint] = []
        stopped: str | None = None
        spent = 0
        copy: Classifier | None = None
        for mark in marks:
            while spent < mark and stopped is None:
                n = min(self.query_batch, mark - spent)
                batch = self._next_queries(n, spec, natural, xs, copy, gen)
                try:
                    answer = oracle(batch).detach().cpu()
                except OracleError as exc:
                    stopped = f"after {spent} queries: {exc}"
                    break
                xs.append(batch.cpu())
                ys.append(answer)
                spent += len(batch)
                progress("extraction queries", spent, self.budget)
            if not xs:
                break
            copy = self._train_copy(torch.cat(xs), torch.cat(ys), oracle)
            agreement, accuracy = self._score(copy, eval_x, eval_labels, eval_y)
            curve.append(ExtractionPoint(spent, agreement, accuracy))
            if stopped:
                break
        if copy is None:
            raise OracleError(f"the oracle answered no query ({stopped})")
        last = curve[-1]
        return ExtractionResult(copy, spent, last.agreement, last.accuracy, curve, stopped)

    # -- pieces ------------------------------------------------------------------
    def _next_queries(self, n: int, spec, natural, xs, copy, gen) -> torch.Tensor:  # type: ignore[no-untyped-def]
        low, high = spec.bounds
        if self.strategy == "random":
            return low + (high - low) * torch.rand((n, *spec.shape), generator=gen)
        if self.strategy == "natural":
            idx = torch.randint(0, len(natural), (n,), generator=gen)
            return natural[idx].cpu()
        # synthetic: seed set first, then Jacobian-sign steps from gathered points.
        gathered = sum(len(x) for x in xs)
        if gathered < self.synthetic_seed_size or copy is None:
            if natural is not None:
                idx = torch.randint(0, len(natural), (n,), generator=gen)
                return natural[idx].cpu()
            return low + (high - low) * torch.rand((n, *spec.shape), generator=gen)
        pool = torch.cat(xs)
        idx = torch.randint(0, len(pool), (n,), generator=gen)
        base = pool[idx].clone().requires_grad_(True)
        logits = copy(base.to(copy.device))
        target = logits.argmax(1)
        (grad,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), base)
        direction = torch.where(torch.rand(n, generator=gen) < 0.5, 1.0, -1.0)
        step = self.synthetic_step * (high - low) * direction.view(-1, *([1] * len(spec.shape)))
        return (base.detach() + step * grad.sign().cpu()).clamp(low, high)

    def _train_copy(self, x: torch.Tensor, answers: torch.Tensor, oracle: Oracle) -> Classifier:
        from mlwarden.core.training import fit

        spec = oracle.spec
        arch = self.architecture
        if arch is None:
            module = default_architecture(spec.shape, spec.num_classes)
        elif isinstance(arch, nn.Module):
            module = fresh_copy(arch, self.seed)
        else:
            module = arch()
        torch.manual_seed(self.seed)
        # Scores: distil the victim's probabilities (soft targets); labels: hard targets.
        targets = answers.long() if oracle.output == "labels" else answers.float()
        fit(
            module,
            x,
            targets,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        # The copy works in the victim's input space, with whatever was assumed about it.
        return Classifier(
            module, spec, name="knockoff-copy", spec_assumptions=oracle.spec_assumptions
        )

    @staticmethod
    def _score(copy: Classifier, eval_x, eval_labels, eval_y) -> tuple[float, float | None]:  # type: ignore[no-untyped-def]
        if eval_x is None:
            return float("nan"), None
        pred = copy.predict(eval_x).cpu()
        agreement = float((pred == eval_labels).float().mean())
        accuracy = float((pred == eval_y).float().mean()) if eval_y is not None else None
        return agreement, accuracy
