"""The text model contract: `TextSpec`, `TextClassifier` and `TextEncoder`.

A text model takes lists of strings and owns the tokenizer it was trained with: a
tokenizer that differs by one vocabulary entry changes every prediction, so the spec
records the tokenizer's class and a SHA-256 of its files, and the model tokenizes its
own inputs. Beside the tensor `Classifier` it keeps the same habits: batched inference
under `torch.inference_mode` in eval mode, a ``forward`` that keeps gradients, mode
handling that it owns, errors that say what to pass instead.

Inputs longer than ``spec.max_tokens`` tokens (special tokens included) are truncated,
never refused, and the spec says so (``truncation="longest_first"``); texts are batched
by length (``batch_size`` per forward pass) and padded to the longest in their batch, and
results come back in the order given. Gradient-based text attacks do not differentiate through token
ids: they take `token_embeddings` of an encoded batch, perturb those, and call
``forward(..., inputs_embeds=...)``; `hidden_states` gives every layer's output.

Nothing here imports ``transformers``: the wrapped model is any module with the Hugging
Face call signature, and the tokenizer any callable that returns a ``BatchEncoding``.
`mlwarden.io.hf` builds both from a model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from mlwarden.core.classifier import ModelModule
from mlwarden.core.contract import Capability, ModelKind, require
from mlwarden.core.errors import DataError, ParameterError

Pooling = Literal["mean", "cls", "max"]
DEFAULT_TEXT_BATCH = 32
"""Texts per forward pass in `logits`, `embed` and friends (a 6-layer MiniLM at 256 tokens
takes about 0.1 GB of activations per 32 texts)."""
TEXT_INPUTS = (Capability.TEXT_INPUTS,)


class TextSpec(BaseModel):
    """What a text model accepts: at most ``max_tokens`` tokens of its own tokenizer.

    ``class_names`` is ``None`` for an encoder (it scores no classes). ``tokenizer`` names
    the tokenizer class, ``tokenizer_sha256`` hashes its files (`mlwarden.io.hf`), so a
    model saved with a different vocabulary is told apart from the original.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(gt=1, description="tokens per text, special tokens included")
    class_names: tuple[str, ...] | None = None
    tokenizer: str = Field(description="the tokenizer's class, e.g. BertTokenizerFast")
    tokenizer_sha256: str = Field(description="SHA-256 over the tokenizer's files")
    vocab_size: int = Field(gt=0)
    truncation: Literal["longest_first"] = "longest_first"
    """Texts over ``max_tokens`` are cut at the end (the only policy offered today)."""
    embedding_dim: int | None = Field(default=None, gt=0)
    pooling: Pooling | None = None
    normalize: bool = False

    @field_validator("class_names")
    @classmethod
    def _two_classes(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and len(v) < 2:
            raise ValueError("a text classifier needs at least 2 class names")
        return v

    @property
    def num_classes(self) -> int:
        if self.class_names is None:
            raise ParameterError("a text encoder has no classes")
        return len(self.class_names)


def check_texts(texts: Any, *, what: str = "inputs") -> list[str]:
    """``texts`` as a list of strings, or a `DataError` that says what was passed instead."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, torch.Tensor):
        raise DataError(
            f"{what}: a text model takes a list of strings, got a tensor of shape "
            f"{tuple(texts.shape)}"
        )
    if not isinstance(texts, Sequence):
        raise DataError(f"{what}: a text model takes a list of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(
            f"{what}: item {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string "
            f"({len(bad)} non-string item(s) in all)"
        )
    return list(texts)


def _given(**tensors: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The model inputs that were given, by name (transformers applies its own defaults to
    the others)."""
    return {name: t for name, t in tensors.items() if t is not None}


class _TextModel(ModelModule):
    """What classifiers and encoders share: the tokenizer, modes, batching, embeddings."""

    model_kind: ModelKind

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        spec: TextSpec,
        *,
        name: str = "model",
        device: torch.device | str | None = None,
        spec_assumptions: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.name = name
        self.spec_assumptions = tuple(spec_assumptions)
        if device is not None:
            from mlwarden.core.device import resolve_device

            self.to(resolve_device(device))
        self._set_mode(False)

    # -- tokens ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask (and token types) of ``texts`` on the model's device,
        padded to the longest, truncated to ``spec.max_tokens``."""
        items = check_texts(texts)
        batch = self.tokenizer(
            items,
            padding=True,
            truncation=True,
            max_length=self.spec.max_tokens,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes before truncation (special tokens included)."""
        items = check_texts(texts)
        ids = self.tokenizer(items, truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    def input_embeddings(self) -> nn.Embedding:
        """The token embedding table (the layer text attacks perturb around)."""
        return self.model.get_input_embeddings()  # type: ignore[operator,no-any-return]

    def token_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings ``(N, L, H)`` of the token ids of ``batch``, with gradients."""
        return self.input_embeddings()(batch["input_ids"])

    def _call(
        self,
        batch: dict[str, torch.Tensor],
        inputs_embeds: torch.Tensor | None,
        hidden: bool,
    ) -> Any:
        args = dict(batch)
        if inputs_embeds is not None:
            args.pop("input_ids", None)
            args["inputs_embeds"] = inputs_embeds
        return self.model(**args, output_hidden_states=hidden, return_dict=True)

    def hidden_states(
        self, batch: dict[str, torch.Tensor], *, inputs_embeds: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Every layer's output ``(N, L, H)`` for an encoded batch (embeddings layer first),
        with gradients; pass ``inputs_embeds`` to start from perturbed embeddings."""
        return tuple(self._call(batch, inputs_embeds, True).hidden_states)

    def _batched(self, texts: Sequence[str], batch_size: int) -> torch.Tensor | None:
        """``self(**encode(chunk))`` over ``texts`` in eval mode without gradients, in their
        order; texts are grouped by length so that a batch pads little."""
        if batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        items = check_texts(texts)
        if not items:
            return None
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        outs = []
        with self.evaluating(), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = [items[i] for i in order[start : start + batch_size]]
                outs.append(self(**self.encode(chunk)))
        stacked = torch.cat(outs)
        result = torch.empty_like(stacked)
        result[torch.tensor(order, device=stacked.device)] = stacked
        return result


class TextClassifier(_TextModel):
    """A sequence classifier over strings (a Hugging Face ``...ForSequenceClassification``).

    ``forward`` takes an encoded batch (or ``inputs_embeds``) and returns logits with
    gradients; `logits`, `probabilities` and `predict` take strings and run batched
    without gradients.
    """

    model_kind = ModelKind.TEXT_CLASSIFIER

    def __init__(self, model: nn.Module, tokenizer: Any, spec: TextSpec, **kw: Any) -> None:
        if spec.class_names is None:
            raise ParameterError("a TextClassifier needs class_names in its TextSpec")
        super().__init__(model, tokenizer, spec, **kw)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch = _given(
            attention_mask=attention_mask, input_ids=input_ids, token_type_ids=token_type_ids
        )
        return self._call(batch, inputs_embeds, False).logits  # type: ignore[no-any-return]

    def logits_and_hidden(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, C)`` and the last hidden state ``(N, L, H)`` of an encoded batch from
        one forward pass, with gradients (the gateway pools the second into the sentence
        embeddings its monitors compare, at no second pass)."""
        out = self._call(batch, None, True)
        return out.logits, out.hidden_states[-1]

    def logits(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> torch.Tensor:
        """Logits ``(N, C)`` for ``texts``, ``batch_size`` texts per forward pass."""
        out = self._batched(texts, batch_size)
        return torch.empty(0, self.num_classes, device=self.device) if out is None else out

    def probabilities(
        self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH
    ) -> torch.Tensor:
        return torch.softmax(self.logits(texts, batch_size), dim=1)

    def predict(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> torch.Tensor:
        return self.logits(texts, batch_size).argmax(dim=1)

    def accuracy(
        self, texts: Sequence[str], labels: torch.Tensor, batch_size: int = DEFAULT_TEXT_BATCH
    ) -> float:
        if len(texts) == 0:
            raise DataError("cannot compute accuracy on an empty data set")
        pred = self.predict(texts, batch_size)
        return float((pred == labels.to(pred.device)).float().mean())


class TextEncoder(_TextModel):
    """A pretrained encoder that maps each text to one pooled embedding.

    Pooling over the last hidden state is what the folder declares (sentence-transformers'
    ``1_Pooling/config.json``): ``mean`` over non-padding tokens, ``cls`` (first token) or
    ``max`` over non-padding tokens, then L2 normalisation if it has a Normalize module.
    """

    model_kind = ModelKind.TEXT_ENCODER

    def __init__(self, model: nn.Module, tokenizer: Any, spec: TextSpec, **kw: Any) -> None:
        if spec.pooling is None:
            raise ParameterError("a TextEncoder needs a pooling mode in its TextSpec")
        super().__init__(model, tokenizer, spec, **kw)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled ``(N, H)`` from token states ``(N, L, H)``, as the spec declares."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.spec.pooling == "cls":
            out = hidden[:, 0]
        elif self.spec.pooling == "max":
            out = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
        else:
            out = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.spec.normalize:
            out = nn.functional.normalize(out, p=2, dim=1)
        return out

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is None:
            raise ParameterError("a TextEncoder needs the attention mask to pool")
        batch = _given(
            attention_mask=attention_mask, input_ids=input_ids, token_type_ids=token_type_ids
        )
        hidden = self._call(batch, inputs_embeds, False).last_hidden_state
        return self.pool(hidden, attention_mask)

    def embed(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> torch.Tensor:
        """Pooled embeddings ``(N, H)`` of ``texts``, without gradients."""
        out = self._batched(texts, batch_size)
        if out is None:
            return torch.empty(0, self.spec.embedding_dim or 0, device=self.device)
        return out


def as_text_model(model: Any, *, by: str, needs: Sequence[Capability] = ()) -> _TextModel:
    """``model`` as a text model, or the contract's error naming ``by`` (tensor models too)."""
    require(model, (*TEXT_INPUTS, *needs), by=by)
    return model  # type: ignore[no-any-return]


__all__ = [
    "DEFAULT_TEXT_BATCH",
    "Pooling",
    "TextClassifier",
    "TextEncoder",
    "TextSpec",
    "as_text_model",
    "check_texts",
]
