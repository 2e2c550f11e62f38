"""Trigger-neuron pruning: a student defence built for a backdoor whose trigger is known.

When the teacher scan names a trigger (`mlwarden.defenses.detection.trigger_search`) or the
user gives one, the parts of the teacher that carry it can be found directly instead of
guessed from dormancy as fine-pruning does (Liu, Dolan-Gavitt and Garg, RAID 2018):

* **Neurons.** The same clean training sentences are run through the teacher twice, as they
  are and with the trigger inserted at a seeded word boundary, and every feed-forward
  neuron of every transformer layer is scored by its *paired* activation shift: the mean
  over sentences of (mean activation over the triggered sentence's tokens - the same over
  the clean sentence), divided by the standard deviation of that difference. The ``share``
  of all neurons with the largest shift are pruned (the up-projection's row and bias held
  at zero, so GELU(0) = 0 and the neuron is silent) while the student is fine-tuned end to
  end; the mask is then made permanent so the student saves as plain weights.
* **The trigger's own tokens.** Their input-embedding rows are reset to the mean embedding
  of the vocabulary's ordinary words before fine-tuning, so the trigger reads as an average
  word and what the student learns of those words it learns from its own clean data.

Why both: on a MiniLM copy with a NeuBA/BadPre backdoor on ``cf`` (benchmarks/
encoder_backdoor_zoo.py), pruning the 2% (10%) of FFN neurons the trigger moves most left
the collapse of triggered sentences at 0.988 (0.937; 0.996 before, 0.253 for clean
sentences), while resetting the trigger token's embedding brought it to 0.376: a backdoor
planted by fine-tuning the whole encoder is spread over every layer's neurons but enters
through the trigger's embedding (docs/text_inheritance.md).

Why our own code: no library offers neuron selection by a known text trigger; the pruning
itself is `torch.nn.utils.prune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mlwarden.core.errors import DataError, ParameterError

TRIGGER_PRUNE_SHARE = 0.02
"""Share of all feed-forward neurons (every layer) that ``trigger_prune`` prunes."""
TRIGGER_TEXTS = 128
"""Training texts run clean and triggered to score the neurons."""
MIN_TEXTS = 4
"""Fewest texts the paired statistic is computed on."""


@dataclass
class TriggerNeurons:
    """The neurons a trigger moves most: per layer index the pruned neuron ids, the
    up-projection's name inside a layer, and every neuron's shift score ``(layers, width)``."""

    selected: dict[int, list[int]]
    up_projection: str
    scores: torch.Tensor
    trigger: str
    texts: int

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.selected.values())


def _activations(
    student: nn.Module, ups: Sequence[nn.Linear], texts: Sequence[str], batch: int = 16
) -> torch.Tensor:
    """Per text and layer, each up-projection neuron's ReLU'd pre-activation averaged over
    the text's real tokens: ``(texts, layers, width)``."""
    rows: list[torch.Tensor] = []
    state: dict[str, torch.Tensor] = {}
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        mask = state["mask"].unsqueeze(-1).to(out.dtype)
        seen.append((out.clamp_min(0) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1))

    handles = [up.register_forward_hook(hook) for up in ups]
    try:
        with student.evaluating(), torch.inference_mode():  # type: ignore[attr-defined]
            for start in range(0, len(texts), batch):
                enc = student.encode(list(texts[start : start + batch]))  # type: ignore[attr-defined]
                state["mask"] = enc["attention_mask"]
                seen.clear()
                student(**enc)
                rows.append(torch.stack([s.cpu() for s in seen], dim=1))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rows)


def find_trigger_neurons(
    student: nn.Module,
    texts: Sequence[str],
    trigger: str,
    *,
    share: float = TRIGGER_PRUNE_SHARE,
    seed: int = 0,
) -> TriggerNeurons:
    """The ``share`` of feed-forward neurons (over all layers) whose activation the
    ``trigger`` raises most, by the paired shift statistic of the module docstring.

    ``student`` is a `TextClassifier` or `TextEncoder` holding the teacher's weights.
    """
    from mlwarden.attacks.poisoning.text import insert_everywhere
    from mlwarden.defenses.training.text_students import ffn_up_projection, transformer_layers

    if not trigger.strip():
        raise ParameterError("trigger_prune needs a non-empty trigger text")
    if not 0.0 < share < 1.0:
        raise ParameterError(f"the pruned share must be in (0, 1), got {share}")
    items = [t for t in texts if t.strip()][:TRIGGER_TEXTS]
    if len(items) < MIN_TEXTS:
        raise DataError(
            f"trigger_prune needs at least {MIN_TEXTS} training texts, got {len(items)}"
        )
    _, layers = transformer_layers(student.model)  # type: ignore[attr-defined]
    up_name = ffn_up_projection(layers[-1])
    ups = [layer.get_submodule(up_name) for layer in layers]
    clean = _activations(student, ups, items)
    triggered = _activations(student, ups, insert_everywhere(items, trigger, seed=seed))
    diff = (triggered - clean).double()
    scores = (diff.mean(0) / diff.std(0).clamp_min(1e-6)).float()  # (layers, width)
    count = max(1, int(share * scores.numel()))
    flat = torch.topk(scores.flatten(), count).indices
    width = scores.shape[1]
    selected: dict[int, list[int]] = {}
    for index in sorted(flat.tolist()):
        selected.setdefault(index // width, []).append(index % width)
    return TriggerNeurons(selected, up_name, scores, trigger, len(items))


def prune_trigger_neurons(student: nn.Module, neurons: TriggerNeurons) -> list[nn.Linear]:
    """Hold the ``neurons``' up-projection rows and biases at zero (`torch.nn.utils.prune`
    masks, kept while training); the masked modules, for `make_permanent`."""
    from torch.nn.utils import prune

    from mlwarden.defenses.training.text_students import transformer_layers

    _, layers = transformer_layers(student.model)  # type: ignore[attr-defined]
    masked = []
    for index, ids in neurons.selected.items():
        up = layers[index].get_submodule(neurons.up_projection)
        assert isinstance(up, nn.Linear)
        keep = torch.ones(up.out_features, device=up.weight.device)
        keep[torch.tensor(ids, device=keep.device)] = 0.0
        prune.custom_from_mask(up, "weight", keep.view(-1, 1).expand_as(up.weight))
        if up.bias is not None:
            prune.custom_from_mask(up, "bias", keep)
        masked.append(up)
    return masked


def reset_trigger_tokens(student: nn.Module, trigger: str) -> list[int]:
    """Set the input-embedding rows of ``trigger``'s tokens to the mean embedding of the
    vocabulary's ordinary whole words (in place); the token ids reset."""
    from mlwarden.defenses.detection.trigger_search import _vocabulary

    tokenizer = student.tokenizer  # type: ignore[attr-defined]
    ids = sorted(set(tokenizer(trigger, add_special_tokens=False)["input_ids"]))
    if not ids:
        raise ParameterError(f"the trigger {trigger!r} has no tokens")
    _, ordinary = _vocabulary(student)  # type: ignore[arg-type]
    table = student.input_embeddings().weight  # type: ignore[attr-defined]
    with torch.no_grad():
        mean = table[torch.tensor(ordinary, device=table.device)].mean(0)
        table[torch.tensor(ids, device=table.device)] = mean
    return ids


def make_permanent(modules: Sequence[nn.Linear]) -> None:
    """Fold the pruning masks into the weights (the saved student has plain tensors)."""
    from torch.nn.utils import prune

    for up in modules:
        prune.remove(up, "weight")
        if up.bias is not None:
            prune.remove(up, "bias")


__all__ = [
    "TRIGGER_PRUNE_SHARE",
    "TriggerNeurons",
    "find_trigger_neurons",
    "make_permanent",
    "prune_trigger_neurons",
    "reset_trigger_tokens",
]
