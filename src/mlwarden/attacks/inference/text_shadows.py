"""LiRA shadows for a text classifier: heads trained on the target's frozen features.

Shadow copies of a fine-tuned transformer cost a fine-tuning run each, far too much for an
audit on CPUs. The shadows here keep the target's encoder body fixed: each text goes
through the target once, the input of its classification head (``classifier``, or
``score`` for decoder models; e.g. BERT's pooled ``[CLS]`` vector) is captured with a
forward hook, and every shadow is a re-initialised copy of that head trained on those
features with `ShadowTraining`, at the cost of a linear layer.

What it assumes: the target was trained like its shadows, i.e. its membership signal lives
in the head. For a target whose head alone was trained on a frozen pretrained encoder that
is exact; for one fine-tuned end to end the body has seen the members too, so the shadows'
OUT confidences are raised on members and LiRA *under*-states the leak (the threshold
attack, which needs no shadows, is unaffected). The report states this recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mlwarden.attacks.inference.lira import ShadowTraining
from mlwarden.core.errors import ParameterError
from mlwarden.core.spec import InputSpec

HEAD_NAMES = ("classifier", "score")
"""Attributes under which transformers' sequence classifiers keep their output head."""
SHADOW_RECIPE = (
    "a re-initialised copy of the target's classification head, trained on the "
    "target's frozen head-input features (the encoder body is not re-trained)"
)


def classification_head(model: Any) -> tuple[str, nn.Module]:
    """The name and module of ``model``'s classification head (a `TextClassifier`)."""
    inner = getattr(model, "model", model)
    for name in HEAD_NAMES:
        head = getattr(inner, name, None)
        if isinstance(head, nn.Module):
            return name, head
    raise ParameterError(
        f"LiRA on a text model needs its classification head (an attribute "
        f"{' or '.join(HEAD_NAMES)}); '{getattr(model, 'name', 'model')}' "
        f"({type(inner).__name__}) has none: run the threshold attack only"
    )


def head_features(model: Any, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """What ``model``'s head receives for each text, ``(N, H)`` on the CPU, in text order.

    One forward pass per text in eval mode; texts are grouped by length, as
    `TextClassifier.logits` groups them.
    """
    name, head = classification_head(model)
    captured: list[torch.Tensor] = []

    def grab(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach().float().cpu())

    items = list(texts)
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    handle = head.register_forward_pre_hook(grab)
    try:
        with model.evaluating(), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = [items[i] for i in order[start : start + batch_size]]
                model(**model.encode(chunk))
    finally:
        handle.remove()
    if any(c.dim() != 2 for c in captured):
        raise ParameterError(
            f"LiRA on a text model trains shadow heads on one vector per text, but the "
            f"'{name}' head of '{getattr(model, 'name', 'model')}' takes a "
            f"{captured[0].dim()}-D input (token states): run the threshold attack only"
        )
    stacked = torch.cat(captured)
    out = torch.empty_like(stacked)
    out[torch.tensor(order)] = stacked
    return out


def head_shadow_training(
    model: Any,
    features: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    dp_epsilon: float | None = None,
    dp_max_grad_norm: float = 1.0,
) -> ShadowTraining:
    """`ShadowTraining` of copies of ``model``'s head over ``features`` (`head_features`)."""
    _, head = classification_head(model)
    low, high = float(features.min()), float(features.max())
    spec = InputSpec(
        shape=(features.shape[1],),
        bounds=(low, high if high > low else low + 1),
        class_names=model.spec.class_names,
    )
    return ShadowTraining(
        head,
        spec,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        dp_epsilon=dp_epsilon,
        dp_max_grad_norm=dp_max_grad_norm,
    )
