"""FreeLB: adversarial training of a transformer student in its token-embedding space.

Zhu, Cheng, Gan, Sun, Goldstein & Liu, "FreeLB: Enhanced Adversarial Training for Natural
Language Understanding", ICLR 2020. Text has no L-inf ball around its input; the ball is
around the word embeddings instead. For each batch, a perturbation ``delta`` of the
embeddings of the real (unpadded) tokens starts uniformly at random with Frobenius norm
about ``init_mag``, then takes ``adv_steps`` normalised gradient-ascent steps of
``adv_lr`` (projected back into the ball of radius ``max_norm`` when that is positive).
The parameter gradients of every ascent step are accumulated (each loss divided by
``adv_steps``), so the one optimiser step descends the average adversarial loss: the
"free" large batch of the paper.

The optimiser is the text students' own (`text_students`: AdamW, the head at
``HEAD_LR_SCALE`` x ``lr``, batches of ``TEXT_BATCH``), so ``freelb`` differs from ``full``
only in the perturbation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from mlwarden.core.errors import ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress


@dataclass(frozen=True)
class FreeLBSettings:
    """The paper's hyper-parameters (its GLUE defaults for BERT-base: 2-3 steps, ``adv_lr``
    0.1, ``init_mag`` 0.1 to 0.6, ``max_norm`` 0 = unbounded)."""

    adv_steps: int = 2
    adv_lr: float = 0.1
    init_mag: float = 0.1
    max_norm: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.adv_steps, bool) or self.adv_steps < 1:
            raise ParameterError(f"adv_steps must be an integer >= 1, got {self.adv_steps}")
        for name in ("adv_lr", "init_mag", "max_norm"):
            value = getattr(self, name)
            if not value >= 0 or value != value or value == float("inf"):
                raise ParameterError(f"{name} must be a finite number >= 0, got {value}")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)


def initial_delta(
    embeds: torch.Tensor, mask: torch.Tensor, init_mag: float, gen: torch.Generator
) -> torch.Tensor:
    """``U(-1, 1)`` on real tokens, scaled by ``init_mag / sqrt(tokens * dim)`` per sample
    (the official implementation's initialisation)."""
    if init_mag == 0:
        return torch.zeros_like(embeds)
    noise = torch.rand(embeds.shape, generator=gen).to(embeds.device, embeds.dtype) * 2 - 1
    m = mask.unsqueeze(-1).to(embeds.dtype)
    dims = (mask.sum(dim=1).to(embeds.dtype) * embeds.shape[-1]).clamp_min(1).view(-1, 1, 1)
    return noise * m * (init_mag / dims.sqrt())


def fit_freelb(
    student: Any,
    texts: Sequence[str],
    labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    settings: FreeLBSettings | None = None,
    progress: ProgressCallback = null_progress,
) -> tuple[list[float], dict[str, Any]]:
    """Fine-tune every trainable parameter of the `TextClassifier` ``student`` with FreeLB;
    returns the mean loss per epoch and the settings used (for the report)."""
    from mlwarden.defenses.training.text_students import TEXT_BATCH, batches, student_optimiser

    s = settings or FreeLBSettings()
    optimiser = student_optimiser(student, lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    steps = epochs * -(-len(texts) // TEXT_BATCH)
    history: list[float] = []
    done = 0
    student.train()
    try:
        for _ in range(epochs):
            total = 0.0
            for idx in batches(len(texts), TEXT_BATCH, gen):
                batch = student.encode([texts[i] for i in idx])
                y = labels[idx].to(student.device)
                mask = batch["attention_mask"]
                optimiser.zero_grad(set_to_none=True)
                embeds = student.token_embeddings(batch)
                delta = initial_delta(embeds.detach(), mask, s.init_mag, gen)
                batch_loss = 0.0
                for step in range(s.adv_steps):
                    delta.requires_grad_(True)
                    logits = student(**batch, inputs_embeds=embeds + delta)
                    loss = nn.functional.cross_entropy(logits, y) / s.adv_steps
                    loss.backward()  # parameter gradients accumulate over the ascent
                    batch_loss += float(loss.detach())
                    if step == s.adv_steps - 1:
                        break
                    grad = delta.grad.detach()
                    delta = delta.detach() + s.adv_lr * grad / _per_sample_norm(grad)
                    delta = delta * mask.unsqueeze(-1).to(delta.dtype)
                    if s.max_norm > 0:
                        factor = (s.max_norm / _per_sample_norm(delta)).clamp(max=1.0)
                        delta = delta * factor
                    embeds = student.token_embeddings(batch)  # the graph was freed
                optimiser.step()
                total += batch_loss * len(idx)
                done += 1
                progress("student (freelb)", done, steps)
            history.append(total / len(texts))
    finally:
        student.eval()
    return history, asdict(s)


__all__ = ["FreeLBSettings", "fit_freelb", "initial_delta"]
