"""Student training from a teacher: the fine-tuning strategies of secure transfer learning.

A backdoor planted in a downloaded teacher lives in its feature extractor; how much
of the teacher a student keeps decides whether the backdoor survives (Yao, Li, Zheng
and Zhao, "Latent Backdoor Attacks on Deep Neural Networks", CCS 2019; Wang et al.,
"With Great Training Comes Great Vulnerability: Practical Attacks against Transfer
Learning", USENIX Security 2018). Strategies, from most to least inherited:

- ``linear_probe``: freeze every layer, train a fresh head on the frozen features.
- ``last_k``: train only the last ``k`` top-level blocks (head included).
- ``full``: fine-tune every parameter.
- ``full_reinit``: fine-tune everything from a re-initialised head, with a divergence
  term that rewards penultimate features *unlike* the teacher's (cosine similarity,
  weight ``divergence_weight``), pushing the student off the teacher's shortcuts.
- ``fineprune``: fine-pruning (`mlwarden.defenses.training.fineprune`) then fine-tune.
- ``adversarial`` / ``trades``: fine-tune everything adversarially (PGD training of Madry et
  al. 2018, or TRADES of Zhang et al. 2019; `mlwarden.defenses.training.adversarial`) at
  L-inf radius ``adv_eps``, so the student resists the evasion a public teacher makes cheap.
  Tensor students only; the text strategies are `text_students.STRATEGIES`.

Every strategy trains a copy; the teacher is never modified. Teachers loaded from
``.pt2`` are supported (see `trainable_copy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.layers import head_layer
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.core.training import fit, trainable_copy

Strategy = Literal["linear_probe", "last_k", "full", "full_reinit", "fineprune", "dp"]
STRATEGIES: tuple[str, ...] = ("linear_probe", "last_k", "full", "full_reinit", "fineprune", "dp")
"""The strategies shared by tensor and text students."""
ADVERSARIAL_STRATEGIES: tuple[str, ...] = ("adversarial", "trades")
"""Adversarial fine-tuning, tensor students only (the method of each: pgd, trades)."""
STUDENT_STRATEGIES: tuple[str, ...] = STRATEGIES + ADVERSARIAL_STRATEGIES
"""Every strategy `train_student` accepts."""


@dataclass
class StudentResult:
    """The trained student, the strategy that made it and its training losses."""

    classifier: Classifier
    strategy: str
    trainable_parameters: int
    history: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def top_level_blocks(module: nn.Module) -> list[str]:
    """Top-level children that hold parameters, in registration order (SmallCNN: features,
    embedding, head)."""
    return [n for n, m in module.named_children() if any(True for _ in m.parameters())]


def reinit_head(module: nn.Module, seed: int) -> str:
    """Re-initialise the last linear layer with a seeded default init; returns its name."""
    name = head_layer(module)
    head = module.get_submodule(name)
    weight = head._parameters["weight"]
    bias = head._parameters.get("bias")
    gen = make_generator(seed)
    bound = 1.0 / max(weight.shape[1], 1) ** 0.5  # nn.Linear's default uniform bound
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=gen) * 2 - 1) * bound)
        if bias is not None:
            bias.copy_((torch.rand(bias.shape, generator=gen) * 2 - 1) * bound)
    return name


def _freeze_all_but(module: nn.Module, trainable: list[str]) -> int:
    for p in module.parameters():
        p.requires_grad_(False)
    count = 0
    for name in trainable:
        for p in module.get_submodule(name).parameters():
            p.requires_grad_(True)
            count += p.numel()
    return count


def train_student(
    teacher: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    strategy: Strategy | str = "full",
    k: int = 1,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    divergence_weight: float = 0.1,
    prune_ratio: float = 0.8,
    target_epsilon: float = 2.0,
    adv_eps: float = 0.1,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> StudentResult:
    """Train a student from ``teacher`` on ``(x, y)`` with ``strategy``; the teacher is untouched.

    ``dp`` re-initialises the head and fine-tunes everything with DP-SGD (Opacus) to
    ``target_epsilon``, protecting the student's own training data; the epsilon spent is
    in ``details``. ``adversarial``/``trades`` train at L-inf radius ``adv_eps``.
    """
    if strategy not in STUDENT_STRATEGIES:
        raise ParameterError(
            f"strategy must be one of {', '.join(STUDENT_STRATEGIES)}, got '{strategy}'"
        )
    if epochs <= 0:
        raise ParameterError(f"epochs must be positive, got {epochs}")
    teacher.spec.validate_batch(x, what="student training data")
    teacher.spec.validate_labels(y, what="student training labels")
    if len(x) != len(y):
        raise DataError(f"student training data has {len(x)} samples but {len(y)} labels")
    if len(torch.unique(y)) < 2:
        raise DataError("student training data holds a single class; need at least 2")
    if strategy in ADVERSARIAL_STRATEGIES:
        return _adversarial_student(
            teacher, x, y, strategy, epochs=epochs, lr=lr, batch_size=batch_size,
            eps=adv_eps, seed=seed, progress=progress,
        )
    if strategy == "fineprune":
        from mlwarden.defenses.training.fineprune import FinePruning

        res = FinePruning(
            prune_ratio=prune_ratio, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed
        ).apply(teacher, x, y, progress=progress)
        n = sum(p.numel() for p in res.classifier.parameters())
        return StudentResult(
            res.classifier,
            strategy,
            n,
            res.history,
            {
                "layer": res.layer,
                "pruned_channels": len(res.pruned_channels),
                "total_channels": res.total_channels,
            },
        )
    student = trainable_copy(teacher, name=f"{teacher.name}-{strategy}")
    module = student.module
    details: dict[str, Any] = {}
    if strategy == "dp":
        from mlwarden.defenses.training.dp import fit_private

        details["reinitialised"] = reinit_head(module, seed)
        out = fit_private(student, x, y, target_epsilon=target_epsilon, epochs=epochs, lr=lr,
                          batch_size=batch_size, seed=seed, progress=progress)
        details.update(epsilon=round(out.epsilon, 4), delta=out.delta,
                       noise_multiplier=round(out.noise_multiplier, 4))
        student.eval()
        trainable = sum(p.numel() for p in module.parameters())
        return StudentResult(student, strategy, trainable, out.loss, details)
    extra = None
    handle = None
    if strategy == "linear_probe":
        head = reinit_head(module, seed)
        trainable = _freeze_all_but(module, [head])
        details["trained"] = [head]
    elif strategy == "last_k":
        blocks = top_level_blocks(module)
        if not 1 <= k <= len(blocks):
            raise ParameterError(
                f"k must be in [1, {len(blocks)}] (blocks: {', '.join(blocks)}), got {k}"
            )
        trainable = _freeze_all_but(module, blocks[-k:])
        details["trained"] = blocks[-k:]
    else:
        trainable = sum(p.numel() for p in module.parameters())
        details["trained"] = ["all"]
        if strategy == "full_reinit":
            if divergence_weight < 0:
                raise ParameterError(f"divergence_weight must be >= 0, got {divergence_weight}")
            details["reinitialised"] = reinit_head(module, seed)
            if divergence_weight > 0:
                extra, handle = _feature_divergence(teacher, student, divergence_weight)
    try:
        history = fit(
            student,
            x,
            y,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            extra_loss=extra,
            progress=progress,
            task=f"student ({strategy})",
        ).loss
    finally:
        if handle is not None:
            handle.remove()
    for p in student.parameters():
        p.requires_grad_(True)
    student.eval()
    return StudentResult(student, strategy, trainable, history, details)


def _adversarial_student(
    teacher: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    strategy: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    eps: float,
    seed: int,
    progress: ProgressCallback,
) -> StudentResult:
    """Every parameter fine-tuned adversarially, with hardening's own defaults otherwise."""
    from mlwarden.defenses.training.adversarial import adversarial_train

    method = "pgd" if strategy == "adversarial" else "trades"
    res = adversarial_train(
        teacher, x, y, method=method, eps=eps, epochs=epochs, lr=lr, batch_size=batch_size,
        warmup_epochs=min(5, max(epochs // 3, 0)), seed=seed, progress=progress,
    )
    res.classifier.name = f"{teacher.name}-{strategy}"
    trainable = sum(p.numel() for p in res.classifier.parameters())
    details: dict[str, Any] = {
        "trained": ["all"], "method": method, "eps": eps, "events": list(res.events)
    }
    return StudentResult(res.classifier, strategy, trainable, res.loss, details)


def _feature_divergence(
    teacher: Classifier, student: Classifier, weight: float
) -> tuple[Any, torch.utils.hooks.RemovableHandle]:
    """``weight * mean cos(student features, teacher features)`` on each batch (bounded in
    [-w, w])."""
    layer = teacher.penultimate_layer()
    target = student.module.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        store["feat"] = out

    handle = target.register_forward_hook(hook)

    def extra_loss(
        _model: nn.Module, xb: torch.Tensor, _yb: torch.Tensor, _logits: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            ref = teacher.features(xb, layer, batch_size=None)
        feat = store["feat"].flatten(1)
        return weight * nn.functional.cosine_similarity(feat, ref.to(feat.device), dim=1).mean()

    return extra_loss, handle
