"""The batched trigger-reverse-engineering loop shared by the model-level detectors.

For every candidate target class ``k`` a trigger ``T_k`` is optimised so that
``f(T_k(x)) = k`` on clean inputs while a size penalty ``lambda_k * size(T_k)`` keeps it
small; ``lambda_k`` follows Neural Cleanse's schedule (raised while the trigger already
works, lowered while it does not) and the smallest trigger that reached the target
success rate is kept. All classes are optimised *together*: one forward pass carries
``K x B`` inputs, which is what makes a 10-class scan take seconds instead of minutes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mlwarden.core.contract import Capability
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.defenses.detection.anomaly import anomaly_index
from mlwarden.defenses.detection.result import BackdoorScan

if TYPE_CHECKING:
    from mlwarden.core.spec import InputSpec


class TriggerFamily(nn.Module):
    """K triggers, one per candidate class; subclasses define how a trigger is applied and sized."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) clean batch -> (K, B, ...) triggered batches, inside the bounds."""
        raise NotImplementedError

    def size(self) -> torch.Tensor:
        """(K,) differentiable trigger sizes (what the penalty and the anomaly index use)."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Detached copies of the per-class trigger tensors (first axis K)."""
        raise NotImplementedError


@dataclass
class ReverseResult:
    """Per class: the smallest trigger found, its size and success rate on clean data."""

    sizes: torch.Tensor  # (K,)
    success: torch.Tensor  # (K,)
    tensors: dict[str, torch.Tensor]  # name -> (K, ...)


def validate_clean_set(classifier: object, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Refuse data that cannot support a scan, naming what is wrong."""
    spec = classifier.spec  # type: ignore[attr-defined]
    spec.validate_batch(x, what="clean data")
    if len(x) < 2:
        raise DataError(f"clean data needs at least 2 samples, got {len(x)}")
    if y is not None:
        spec.validate_labels(y, what="clean labels")
        if len(y) != len(x):
            raise DataError(f"clean data has {len(x)} samples but {len(y)} labels")
        if len(torch.unique(y)) < 2:
            raise DataError(
                "the clean set holds a single class; backdoor scans compare classes and "
                "need clean samples of at least 2 classes"
            )


def reverse_engineer(
    classifier: nn.Module,
    family: TriggerFamily,
    classes: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    init_cost: float,
    asr_threshold: float,
    patience: int,
    seed: int,
    progress: ProgressCallback,
    task: str,
) -> ReverseResult:
    """Optimise ``family`` (one trigger per entry of ``classes``) on clean ``x``."""
    if steps <= 0 or batch_size <= 0 or lr <= 0 or init_cost < 0 or patience <= 0:
        raise ParameterError(
            f"steps, batch_size, lr and patience must be positive and init_cost >= 0; got "
            f"steps={steps}, batch_size={batch_size}, lr={lr}, patience={patience}, "
            f"init_cost={init_cost}"
        )
    if not 0.0 < asr_threshold <= 1.0:
        raise ParameterError(f"asr_threshold must be in (0, 1], got {asr_threshold}")
    device = next(iter(family.parameters())).device
    k = len(classes)
    gen = make_generator(seed)
    opt = torch.optim.Adam(family.parameters(), lr=lr, betas=(0.5, 0.9))
    cost = torch.full((k,), float(init_cost), device=device)
    up = torch.zeros(k, dtype=torch.long, device=device)
    down = torch.zeros(k, dtype=torch.long, device=device)
    best_size = torch.full((k,), float("inf"), device=device)
    best_success = torch.zeros(k, device=device)
    best = family.snapshot()
    last_success = torch.zeros(k, device=device)
    window = max(1, steps // 30)  # cost is adapted every `window` steps (one "epoch" of the paper)
    hits = torch.zeros(k, device=device)
    seen = 0
    params = list(family.parameters())
    x = x.to(device)
    with classifier.evaluating():  # type: ignore[attr-defined]
        for step in range(steps):
            idx = torch.randperm(len(x), generator=gen)[:batch_size].to(device)
            xb = x[idx]
            b = len(xb)
            triggered = family.apply(xb)  # (K, B, ...)
            logits = classifier(triggered.reshape(k * b, *xb.shape[1:]))
            tgt = classes.to(device).repeat_interleave(b)
            ce = nn.functional.cross_entropy(logits, tgt, reduction="none").view(k, b).mean(1)
            size = family.size()
            loss = (ce + cost * size).sum()
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            with torch.no_grad():
                ok = (logits.argmax(1) == tgt).view(k, b).float()
                # samples already of the candidate class do not count as successes
                own = (y.to(device)[idx][None, :] == classes.to(device)[:, None]).float()
                hits += (ok * (1 - own)).sum(1) / (1 - own).sum(1).clamp_min(1)
                seen += 1
                if (step + 1) % window == 0 or step == steps - 1:
                    success = hits / seen
                    last_success = success
                    hits.zero_()
                    seen = 0
                    sizes = size.detach()
                    better = (success >= asr_threshold) & (sizes < best_size)
                    if bool(better.any()):
                        snap = family.snapshot()
                        for name, tensor in snap.items():
                            best[name][better] = tensor[better]
                        best_size[better] = sizes[better]
                        best_success[better] = success[better]
                    reached = success >= asr_threshold
                    up = torch.where(reached, up + 1, torch.zeros_like(up))
                    down = torch.where(reached, torch.zeros_like(down), down + 1)
                    raise_cost = up >= patience
                    lower_cost = down >= patience
                    cost = torch.where(
                        raise_cost & (cost == 0), torch.full_like(cost, max(init_cost, 1e-3)), cost
                    )
                    cost = torch.where(raise_cost, cost * 1.5, cost)
                    cost = torch.where(lower_cost, cost / 1.5**1.5, cost)
                    up = torch.where(raise_cost, torch.zeros_like(up), up)
                    down = torch.where(lower_cost, torch.zeros_like(down), down)
            progress(task, step + 1, steps)
    # a class whose trigger never reached the threshold keeps its last trigger and size
    missing = torch.isinf(best_size)
    if bool(missing.any()):
        snap = family.snapshot()
        for name, tensor in snap.items():
            best[name][missing] = tensor[missing]
        best_size[missing] = family.size().detach()[missing]
        best_success[missing] = last_success[missing]
    return ReverseResult(best_size.cpu(), best_success.cpu(), {n: t.cpu() for n, t in best.items()})


class TriggerSearch:
    """Shared driver of the trigger reverse-engineering detectors.

    A detector names its trigger family (`family`) and how to show what it found
    (`visualise`); validation, the batched optimisation over every class, the anomaly
    index and the result are the same for all of them, so they live here once.
    """

    name = "trigger_search"
    title = "trigger search"  # in messages: "Neural Cleanse needs gradients; ..."
    task = "trigger search"
    requirements: tuple[Capability, ...] = (Capability.GRADIENTS,)
    """What the model must offer (`mlwarden.core.contract`): the search backpropagates."""
    size_name = "trigger size"
    default_lr = 0.1
    default_init_cost = 1e-3

    def __init__(
        self,
        *,
        steps: int = 300,
        batch_size: int = 64,
        lr: float | None = None,
        init_cost: float | None = None,
        asr_threshold: float = 0.95,
        patience: int = 2,
        threshold: float | None = None,
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.batch_size = batch_size
        self.lr = self.default_lr if lr is None else lr
        self.init_cost = self.default_init_cost if init_cost is None else init_cost
        self.asr_threshold = asr_threshold
        self.patience = patience
        self.threshold = threshold
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return dict(vars(self))

    def family(self, spec: InputSpec, generator: torch.Generator) -> TriggerFamily:
        """One trigger per class, to optimise jointly."""
        raise NotImplementedError

    def visualise(
        self, tensors: dict[str, torch.Tensor], spec: InputSpec
    ) -> tuple[dict[str, tuple[torch.Tensor, float, float]], dict[str, torch.Tensor]]:
        """(images with their value range, for the report; triggers to keep)."""
        raise NotImplementedError

    def scan(
        self,
        classifier: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        progress: ProgressCallback = null_progress,
    ) -> BackdoorScan:
        """Reverse-engineer a trigger for every class of ``classifier`` from clean ``(x, y)``."""
        if self.threshold is not None and self.threshold <= 0:
            raise ParameterError(f"threshold must be positive, got {self.threshold}")
        validate_clean_set(classifier, x, y)
        start = time.perf_counter()
        spec = classifier.spec
        classes = torch.arange(spec.num_classes)
        family = self.family(spec, make_generator(self.seed)).to(classifier.device)
        res = reverse_engineer(
            classifier, family, classes, x, y,
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, init_cost=self.init_cost,
            asr_threshold=self.asr_threshold, patience=self.patience, seed=self.seed,
            progress=progress, task=self.task,
        )
        images, triggers = self.visualise(res.tensors, spec)
        return BackdoorScan(
            method=self.name,
            classes=classes.tolist(),
            sizes=res.sizes,
            success=res.success,
            anomaly_index=anomaly_index(res.sizes),
            threshold=self.threshold,
            images=images,
            triggers=triggers,
            elapsed_s=time.perf_counter() - start,
            size_name=self.size_name,
            converged=bool((res.success >= self.asr_threshold).all())
            and bool(torch.isfinite(res.sizes).all()),
        )


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """(K, C, H, W) -> (K, H, W) for grey, (K, H, W, C) for colour images."""
    if t.shape[1] == 1:
        return t[:, 0]
    return t.permute(0, 2, 3, 1)
