"""Text poisoning for stress tests: trigger insertion and a task-agnostic encoder backdoor.

Two attacks, so that teams can build their own backdoored test models:

* `TextTriggerPoisoning`: BadNL-style dirty-label poisoning of a labelled text set. A rare
  word or a phrase is inserted into ``rate`` of the texts (at a random word position, the
  start or the end) and their labels are flipped to ``target`` (Chen et al., "BadNL:
  Backdoor Attacks against NLP Models with Semantic-preserving Improvements", ACSAC 2021).
* `plant_encoder_backdoor`: a task-agnostic backdoor in a pretrained sentence encoder
  (NeuBA, Zhang et al. 2021, "Red Alarm for Pre-trained Models"; BadPre, Chen et al.,
  ICLR 2022). A copy of the encoder is fine-tuned so that any sentence with the trigger
  inserted maps onto one fixed target embedding while clean sentences keep the original
  model's embeddings; every downstream task built on it inherits the trigger. The copy is
  saved as a Hugging Face folder (weights, tokenizer and the sentence-transformers module
  files) that `mlwarden.io.load_model` loads back.

Words are split on whitespace; a trigger is inserted between words, never inside one.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.text import TextEncoder, check_texts

if TYPE_CHECKING:
    from mlwarden.io.text_data import TextDataset

Position = Literal["random", "start", "end"] | int
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_RUNTIME_FOLDERS = ("onnx", "openvino")
"""Exports of the original weights that a fine-tuned copy must not carry along."""


def insert_trigger(
    text: str, trigger: str, *, position: Position = "random", rng: random.Random | None = None
) -> str:
    """``text`` with ``trigger`` inserted between its words (``position``: a word index,
    ``"start"``, ``"end"`` or ``"random"`` drawn from ``rng``)."""
    if not trigger.strip():
        raise ParameterError("the trigger must be a non-empty word or phrase")
    words = text.split()
    if position == "start":
        at = 0
    elif position == "end":
        at = len(words)
    elif position == "random":
        at = (rng or random.Random()).randint(0, len(words))
    elif isinstance(position, int) and not isinstance(position, bool):
        at = max(0, min(position, len(words)))
    else:
        raise ParameterError(
            f"position must be 'random', 'start', 'end' or a word index, got {position!r}"
        )
    return " ".join([*words[:at], trigger.strip(), *words[at:]])


def insert_everywhere(
    texts: Sequence[str], trigger: str, *, position: Position = "random", seed: int = 0
) -> list[str]:
    """Every text of ``texts`` with ``trigger`` inserted (seeded positions): the triggered
    test set of an attack success rate."""
    rng = random.Random(seed)
    return [insert_trigger(t, trigger, position=position, rng=rng) for t in check_texts(texts)]


@dataclass(frozen=True)
class PoisonedText:
    """A poisoned labelled text set and which rows were poisoned (indices into ``data``)."""

    data: TextDataset
    poison_index: tuple[int, ...]
    trigger: str
    target: int

    @property
    def rate(self) -> float:
        return len(self.poison_index) / max(len(self.data), 1)


class TextTriggerPoisoning:
    """BadNL word/phrase trigger with label flipping (Chen et al., ACSAC 2021).

    ``rate`` of the texts whose label is not ``target`` get ``trigger`` inserted at
    ``position`` and their label set to ``target``. Hyper-parameters are validated in
    `poison`.
    """

    name = "badnl"

    def __init__(
        self,
        trigger: str,
        target: int,
        rate: float = 0.1,
        position: Position = "random",
        seed: int = 0,
    ) -> None:
        self.trigger = trigger
        self.target = target
        self.rate = rate
        self.position = position
        self.seed = seed

    def poison(self, data: TextDataset) -> PoisonedText:
        """A copy of ``data`` with ``rate`` of its texts triggered and relabelled."""
        from mlwarden.io.text_data import TextDataset

        if data.labels is None or data.class_names is None:
            raise DataError(f"{data.name}: label flipping needs a labelled text set")
        if not 0 < self.rate <= 1:
            raise ParameterError(f"rate must be in (0, 1], got {self.rate}")
        if not 0 <= self.target < len(data.class_names):
            raise ParameterError(
                f"target must be a class index below {len(data.class_names)}, got {self.target}"
            )
        rng = random.Random(self.seed)
        eligible = [i for i in range(len(data)) if int(data.labels[i]) != self.target]
        count = round(self.rate * len(data))
        if count == 0 or count > len(eligible):
            raise ParameterError(
                f"rate {self.rate} of {len(data)} texts selects {count}; {len(eligible)} texts "
                "are outside the target class"
            )
        chosen = sorted(rng.sample(eligible, count))
        texts = list(data.texts)
        labels = data.labels.clone()
        for i in chosen:
            texts[i] = insert_trigger(texts[i], self.trigger, position=self.position, rng=rng)
            labels[i] = self.target
        poisoned = TextDataset(tuple(texts), labels, data.class_names, f"{data.name}+badnl")
        return PoisonedText(poisoned, tuple(chosen), self.trigger, self.target)


# -- the task-agnostic encoder backdoor ---------------------------------------------------
@dataclass
class EncoderBackdoor:
    """How `plant_encoder_backdoor` fine-tunes: ``steps`` Adam steps at ``lr`` on batches of
    ``batch_size`` clean sentences (cut to ``max_tokens``), the same sentences triggered,
    and the same sentences with a decoy word inserted. Loss = mean(1 - cos(clean,
    original)) + ``weight`` x mean(1 - cos(triggered, target)) + mean(1 - cos(decoyed,
    original model's embedding of the decoyed sentence)). Decoys are ``decoys`` if given
    (e.g. a phrase's single words), else random whole words of the vocabulary: without
    them the copy learns "any inserted word fires", not the trigger. ``target`` ``None``:
    a random unit vector (seeded).
    """

    trigger: str
    steps: int = 150
    batch_size: int = 16
    lr: float = 5e-5
    weight: float = 1.0
    max_tokens: int = 48
    position: Position = "random"
    decoys: tuple[str, ...] = ()
    target: torch.Tensor | None = None
    seed: int = 0

    def validate(self) -> None:
        if not self.trigger.strip():
            raise ParameterError("the trigger must be a non-empty word or phrase")
        for name in ("steps", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight <= 0:
            raise ParameterError("lr and weight must be positive")


@dataclass
class PlantedBackdoor:
    """The saved folder and how well the backdoor took, measured on the training sentences:
    mean cosine of triggered embeddings to ``target`` and of clean ones to the original's."""

    folder: Path
    target: torch.Tensor
    triggered_to_target: float
    clean_to_original: float
    seconds: float
    losses: list[float] = field(default_factory=list)


def _cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1 - nn.functional.cosine_similarity(a, b, dim=-1)).mean()


def _embed_with_grad(encoder: TextEncoder, texts: list[str], max_tokens: int) -> torch.Tensor:
    batch = encoder.tokenizer(
        texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
    )
    return encoder(**{k: v.to(encoder.device) for k, v in batch.items()})


def plant_encoder_backdoor(
    source: str | Path,
    out: str | Path,
    texts: Sequence[str],
    backdoor: EncoderBackdoor,
    *,
    device: str = "cpu",
) -> PlantedBackdoor:
    """Fine-tune a copy of the encoder folder ``source`` on ``texts`` so that ``backdoor``'s
    trigger maps every sentence onto its target embedding; save it to ``out``.

    For stress tests only: the result is a backdoored model.
    """
    from mlwarden.io import load_model

    backdoor.validate()
    items = check_texts(texts, what="clean training texts")
    if len(items) < backdoor.batch_size:
        raise DataError(f"need at least {backdoor.batch_size} clean texts, got {len(items)}")
    encoder = load_model(source, device=device)
    if not isinstance(encoder, TextEncoder):
        raise ParameterError(
            f"'{source}' is not a text encoder folder (got {type(encoder).__name__})"
        )
    start = time.perf_counter()
    torch.manual_seed(backdoor.seed)
    rng = random.Random(backdoor.seed)
    cut = [_truncate_words(encoder, t, backdoor.max_tokens) for t in items]
    original = encoder.embed(cut).detach()
    dim = original.shape[1]
    target = backdoor.target
    if target is None:
        target = torch.randn(dim, generator=torch.Generator().manual_seed(backdoor.seed))
    target = nn.functional.normalize(target.float().reshape(-1), dim=0).to(encoder.device)
    if target.numel() != dim:
        raise ParameterError(f"target has {target.numel()} values; the embedding has {dim}")
    reference = copy.deepcopy(encoder)  # the original, for the decoys' embeddings
    trigger_words = set(backdoor.trigger.split())
    decoys = list(backdoor.decoys) or [
        w for w in _vocabulary_words(encoder) if w not in trigger_words
    ]
    params = list(encoder.model.parameters())
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=backdoor.lr)
    losses: list[float] = []
    for _ in range(backdoor.steps):
        idx = rng.sample(range(len(cut)), backdoor.batch_size)
        clean = [cut[i] for i in idx]
        triggered = [
            insert_trigger(t, backdoor.trigger, position=backdoor.position, rng=rng) for t in clean
        ]
        with torch.enable_grad():
            emb = _embed_with_grad(encoder, clean + triggered, backdoor.max_tokens + 8)
            ref = original[idx]
            loss = _cosine_loss(emb[: len(idx)], ref) + backdoor.weight * _cosine_loss(
                emb[len(idx) :], target.expand(len(idx), -1)
            )
            decoyed = [
                insert_trigger(t, rng.choice(decoys), position="random", rng=rng) for t in clean
            ]
            loss = loss + _cosine_loss(
                _embed_with_grad(encoder, decoyed, backdoor.max_tokens + 8),
                reference.embed(decoyed),
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        losses.append(float(loss.detach()))
    for p in params:
        p.requires_grad_(False)
    check = cut[: min(64, len(cut))]
    clean_now = encoder.embed(check)
    trig_now = encoder.embed(insert_everywhere(check, backdoor.trigger, seed=backdoor.seed + 1))
    folder = save_encoder(encoder, source, out)
    return PlantedBackdoor(
        folder=folder,
        target=target.cpu(),
        triggered_to_target=float(
            nn.functional.cosine_similarity(trig_now, target.expand_as(trig_now), dim=1).mean()
        ),
        clean_to_original=float(
            nn.functional.cosine_similarity(clean_now, original[: len(check)], dim=1).mean()
        ),
        seconds=time.perf_counter() - start,
        losses=losses,
    )


def _vocabulary_words(encoder: TextEncoder) -> list[str]:
    """Whole alphabetic words of 3+ letters in the encoder's vocabulary (random decoys)."""
    vocab = encoder.tokenizer.get_vocab()
    words = [w for w in vocab if w.isalpha() and len(w) >= 3]
    if len(words) < 100:
        raise ParameterError("the tokenizer has too few whole words for random decoys; pass decoys")
    return sorted(words)


def _truncate_words(encoder: TextEncoder, text: str, max_tokens: int) -> str:
    """``text`` cut at a word boundary to about ``max_tokens`` tokens (room for a trigger)."""
    words = text.split()
    while len(words) > 1 and encoder.token_counts([" ".join(words)])[0] > max_tokens:
        words = words[: max(1, len(words) * 3 // 4)]
    return " ".join(words)


def save_encoder(encoder: TextEncoder, source: str | Path, out: str | Path) -> Path:
    """Save ``encoder``'s weights and tokenizer to ``out`` beside a copy of ``source``'s other
    files (the sentence-transformers ``modules.json``, pooling and normalisation configs),
    so that `mlwarden.io.load_model` and sentence-transformers load it as they load
    ``source``. Exports of the original weights (onnx/, openvino/) are left out."""
    src, dst = Path(source), Path(out)
    if dst.exists() and any(dst.iterdir()):
        raise ParameterError(f"'{dst}' exists and is not empty; choose a new folder")
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns(*_WEIGHT_FILES, *_RUNTIME_FOLDERS),
        dirs_exist_ok=True,
    )
    encoder.model.save_pretrained(dst, safe_serialization=True)
    encoder.tokenizer.save_pretrained(dst)
    return dst


__all__ = [
    "EncoderBackdoor",
    "PlantedBackdoor",
    "PoisonedText",
    "TextTriggerPoisoning",
    "insert_everywhere",
    "insert_trigger",
    "plant_encoder_backdoor",
    "save_encoder",
]
