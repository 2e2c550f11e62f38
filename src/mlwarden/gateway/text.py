"""Serving a text classifier: tokenization, the forward pass and sentence embeddings, per batch.

A text request is parsed and bounded in characters on the event loop
(`validation.parse_texts`); everything that needs the model's tokenizer happens here, in
the batch step, once for the texts of every request in the batch: one tokenizer call (the
fast tokenizer's Rust batch path), each request's texts checked against the token limit
(``[gateway.text] over_long``: the request is refused, or its texts are cut), then the
batch's texts sorted by length and padded per group of similar length (`TextBatchWorker.chunks`),
a forward pass per group.

The attack monitors and the Mahalanobis OOD validator work on *sentence embeddings*: the
mean over non-padding tokens of the classifier's last hidden state, L2-normalised. Why:
the monitors compare queries by L2 distance (PRADA's minimum distances, the k-NN distance
of stateful detection), so a query must be one fixed-length vector in which near means
similar; token ids are neither. The last hidden state is what the classification head
reads and comes from the same forward pass (no second model, no second pass); mean
pooling is what sentence encoders such as MiniLM are trained for, and unlike a ``[CLS]``
pooler it exists for every architecture; normalising makes distances cosine-like, so a
threshold does not depend on the encoder's scale. Near-duplicate probing (word swaps of
one sentence, as text attacks query) lands within a small distance of earlier queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from mlwarden.core.contract import Capability, ModelKind, kind_of, require
from mlwarden.core.errors import ConfigError
from mlwarden.defenses.detection.ood import EnergyDetector, MahalanobisDetector
from mlwarden.gateway.batching import BatchAnswer, BatchStep, Ticket
from mlwarden.gateway.errors import GatewayError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlwarden.core.text import TextClassifier
    from mlwarden.defenses.output import Released
    from mlwarden.gateway.config import TextConfig
    from mlwarden.gateway.monitoring import MonitorBank

SENTENCE_EMBEDDING = "sentence_embedding"
"""The feature 'layer' a text validator is fitted on (`sentence_embeddings`), as recorded in
the validator file; a validator fitted on a module layer of a tensor model is refused."""
FIT_BATCH = 32
"""Texts per forward pass when fitting a validator (as `mlwarden.core.text` batches)."""


def serves_text(model: object) -> bool:
    """Whether ``model`` takes text (then `TextBatchWorker` serves it)."""
    return kind_of(model) in (ModelKind.TEXT_CLASSIFIER, ModelKind.TEXT_ENCODER)


def check_text_model(model: object) -> None:
    """`ParameterError` unless the gateway can serve ``model`` as a text classifier (an
    encoder scores no classes); call it before anything else is built."""
    require(
        model,
        (Capability.TEXT_INPUTS, Capability.LABELS),
        by="the gateway",
        hint="serve a ...ForSequenceClassification folder",
    )


def sentence_embeddings(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean over the non-padding tokens of ``hidden`` ``(N, L, H)``: ``(N, H)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean.float(), p=2, dim=1)


def text_features(
    model: TextClassifier, texts: Sequence[str], batch_size: int = FIT_BATCH
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, sentence embeddings) of ``texts``, as the gateway computes them, in order;
    what ``mlwarden gateway fit-validator`` fits a text validator on."""
    logits, embeddings = [], []
    with model.evaluating(), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = model.encode(list(texts[start : start + batch_size]))
            out, hidden = model.logits_and_hidden(batch)
            logits.append(out.float().cpu())
            embeddings.append(sentence_embeddings(hidden, batch["attention_mask"]).cpu())
    return torch.cat(logits), torch.cat(embeddings)


class TextRunner:
    """An encoded batch -> (probabilities, OOD scores or None, sentence embeddings)."""

    def __init__(
        self, model: TextClassifier, validator: MahalanobisDetector | EnergyDetector | None = None
    ) -> None:
        check_text_model(model)
        if isinstance(validator, MahalanobisDetector):
            if validator.layer_ != SENTENCE_EMBEDDING:
                raise ConfigError(
                    f"gateway.validation.validator was fitted on layer '{validator.layer_}' of a "
                    "tensor model, not on a text model's sentence embeddings; re-fit it with "
                    "`mlwarden gateway fit-validator --model FOLDER --data texts.jsonl`"
                )
            hidden = getattr(model.model.config, "hidden_size", None)
            if hidden is not None and validator.means_.shape[1] != hidden:
                raise ConfigError(
                    f"gateway.validation.validator was fitted on {validator.means_.shape[1]}-"
                    f"dimensional embeddings; this model's are {hidden}-dimensional: re-fit "
                    "it on this model"
                )
        self.model = model
        self.validator = validator

    def __call__(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        model = self.model
        with model.evaluating(), torch.inference_mode():
            logits, hidden = model.logits_and_hidden(batch)
            embeddings = sentence_embeddings(hidden, batch["attention_mask"]).cpu()
            logits = logits.float().cpu()
        scores = None
        if isinstance(self.validator, MahalanobisDetector):
            scores = self.validator.score_features(embeddings)
        elif isinstance(self.validator, EnergyDetector):
            scores = self.validator.score_logits(logits)
        return torch.softmax(logits, dim=1), scores, embeddings


class TextBatchWorker(BatchStep):
    """The batch step of a text classifier: tokenize the batch's texts with the model's own
    tokenizer, refuse (or cut) the over-long, pad to the batch's longest, one forward pass,
    then `BatchStep.answer` with the sentence embeddings for the monitors.

    Returns per request a `BatchAnswer`, or the `GatewayError` that refuses it (a text over
    the token limit with ``over_long = "refuse"``); the others in its batch are answered.
    """

    def __init__(
        self,
        model: TextClassifier,
        monitors: MonitorBank,
        harden: Callable[[torch.Tensor, str], Released],
        text: TextConfig,
        *,
        validator: MahalanobisDetector | EnergyDetector | None = None,
    ) -> None:
        super().__init__(
            monitors, harden, ood_threshold=validator.threshold_ if validator is not None else None
        )
        self.runner = TextRunner(model, validator)
        self.tokenizer = model.tokenizer
        self.max_tokens = text.token_limit(model.spec.max_tokens)
        self.refuse = text.over_long == "refuse"
        self.padding_slack = text.padding_slack
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            raise ConfigError(
                f"the tokenizer of '{model.name}' has no padding token, which "
                "batching texts of different lengths needs"
            )
        self.pad_id = int(pad)
        self.pad_left = getattr(self.tokenizer, "padding_side", "right") == "left"
        names = getattr(self.tokenizer, "model_input_names", ())
        self.token_types = "token_type_ids" in names
        self.device = model.device

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, cut at ``max_tokens`` (one more when
        over-long texts are refused, so that they show as longer than the limit)."""
        cap = self.max_tokens + 1 if self.refuse else self.max_tokens
        out = self.tokenizer(
            texts,
            truncation=True,
            max_length=cap,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return list(out["input_ids"])

    def pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """The model's inputs for ``ids``, padded to the longest of them."""
        width = max(len(r) for r in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            span = slice(width - len(row), width) if self.pad_left else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if self.token_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        return {k: v.to(self.device) for k, v in batch.items()}

    def chunks(self, lengths: Sequence[int]) -> list[list[int]]:
        """Rows grouped by length for their forward passes: sorted, and a new group begun
        where padding the next row's group to its length would waste more than
        ``padding_slack`` of the group's tokens.

        Why: one batch of every request's texts pads each short review to the longest
        (measured with MiniLM on a loaded 2-core machine: 16 held-out reviews padded as one
        batch took 0.8x the time of 16 single passes; sorted into groups of similar length,
        0.6-0.7x), while still running few, large matrix products."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = []
        group: list[int] = []
        tokens = 0
        for i in order:
            n = lengths[i]
            if group and (len(group) + 1) * n > (1 + self.padding_slack) * (tokens + n):
                groups.append(group)
                group, tokens = [], 0
            group.append(i)
            tokens += n
        groups.append(group)
        return groups

    def forward(
        self, ids: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(probabilities, OOD scores, sentence embeddings) of ``ids``, in their order, from
        one forward pass per group of `chunks`."""
        groups = self.chunks([len(r) for r in ids])
        if len(groups) == 1:
            return self.runner(self.pad(ids))
        outs = [self.runner(self.pad([ids[i] for i in g])) for g in groups]
        where = torch.empty(len(ids), dtype=torch.long)
        where[torch.tensor([i for g in groups for i in g])] = torch.arange(len(ids))
        probs = torch.cat([o[0] for o in outs])[where]
        scores = (
            torch.cat([o[1] for o in outs])[where]  # type: ignore[misc]
            if outs[0][1] is not None
            else None
        )
        embeddings = torch.cat([o[2] for o in outs])[where]
        return probs, scores, embeddings

    def __call__(
        self, texts: list[str], items: list[tuple[Ticket, int]]
    ) -> list[BatchAnswer | GatewayError]:
        ids = self.tokenize(texts)
        refused: dict[int, GatewayError] = {}
        kept: list[tuple[Ticket, int]] = []
        rows: list[int] = []
        start = 0
        for j, (ticket, n) in enumerate(items):
            long = [i for i in range(n) if len(ids[start + i]) > self.max_tokens]
            if long:
                shown = ", ".join(f"inputs[{i}]" for i in long[:5]) + (
                    ", ..." if len(long) > 5 else ""
                )
                refused[j] = GatewayError(
                    422,
                    "too_many_tokens",
                    f"{shown} take(s) more than {self.max_tokens} tokens of the model's "
                    f"tokenizer (special tokens included), the limit per text: shorten them",
                )
            else:
                kept.append((ticket, n))
                rows.extend(range(start, start + n))
            start += n
        answers: list[Any] = []
        if kept:
            probs, scores, embeddings = self.forward([ids[r] for r in rows])
            answers = self.answer(
                embeddings, probs, scores, kept, repeat_keys=[texts[r] for r in rows]
            )
        done = iter(answers)
        return [refused[j] if j in refused else next(done) for j in range(len(items))]
