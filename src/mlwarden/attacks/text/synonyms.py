"""Where substitute words come from: nearest neighbours in a word-embedding table.

TextFooler draws synonyms from counter-fitted GloVe vectors, which are not packaged for
offline use; nothing here downloads. The offline source is the input-embedding table of a
local BERT-family model (by default the packaged all-MiniLM-L6-v2 sentence encoder),
restricted to its whole-word, lower-case alphabetic tokens (about 21,700 of MiniLM's 30,522):
the ``k`` nearest by cosine similarity above ``min_cos`` are the candidates.

Those vectors were never counter-fitted, so antonyms sit close to their words (``good`` has
``bad`` among its five nearest, ``boring`` has ``exciting``): the sentence-similarity
constraint removes some, not all. An adversarial example built this way can change the
meaning; the report shows every example so a reader can judge, and the docs say so.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import torch

from mlwarden.attacks.text._words import STOP_WORDS
from mlwarden.core.errors import ParameterError

DEFAULT_NEIGHBOURS = 15
"""Candidates per word (TextFooler uses 50 counter-fitted neighbours; 15 keeps the query
count low and loses little, see docs/text-attacks.md)."""
DEFAULT_MIN_COS = 0.3
"""Cosine floor between a word and a substitute in the token-embedding space."""
_WHOLE_WORD = re.compile(r"[a-z]{2,}")


class SynonymSource(Protocol):
    """Anything that proposes substitutes for a (lower-case) word, best first."""

    def neighbours(self, word: str) -> list[str]: ...


class EmbeddingNeighbours:
    """Nearest whole-word tokens of an embedding table (`module docstring <synonyms>`)."""

    def __init__(
        self,
        embedding: torch.nn.Embedding,
        vocab: dict[str, int],
        *,
        k: int = DEFAULT_NEIGHBOURS,
        min_cos: float = DEFAULT_MIN_COS,
    ) -> None:
        if k < 1:
            raise ParameterError(f"k (neighbours per word) must be >= 1, got {k}")
        if not -1.0 <= min_cos <= 1.0:
            raise ParameterError(f"min_cos must be in [-1, 1], got {min_cos}")
        self.k = k
        self.min_cos = min_cos
        words = sorted(w for w in vocab if _WHOLE_WORD.fullmatch(w))
        self._words = words
        self._row = {w: i for i, w in enumerate(words)}
        ids = torch.tensor([vocab[w] for w in words])
        with torch.no_grad():
            table = embedding.weight.detach()[ids.to(embedding.weight.device)].float().cpu()
        self._unit = torch.nn.functional.normalize(table, dim=1)
        self._candidates = frozenset(w for w in words if w not in STOP_WORDS)
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def of_model(cls, model: Any, **kw: Any) -> EmbeddingNeighbours:
        """The neighbours of a `TextClassifier`'s or `TextEncoder`'s own embedding table."""
        return cls(model.input_embeddings(), model.tokenizer.get_vocab(), **kw)

    def knows(self, word: str) -> bool:
        return word in self._row

    def neighbours(self, word: str) -> list[str]:
        """Up to ``k`` substitutes for ``word``, nearest first (none for an unknown word)."""
        if word not in self._cache:
            self._cache[word] = self._nearest(word)
        return self._cache[word]

    def _nearest(self, word: str) -> list[str]:
        row = self._row.get(word)
        if row is None:
            return []
        sims = self._unit @ self._unit[row]
        sims[row] = -2.0
        values, index = sims.topk(min(len(self._words) - 1, 4 * self.k))
        out: list[str] = []
        for value, i in zip(values.tolist(), index.tolist(), strict=True):
            if value < self.min_cos or len(out) == self.k:
                break
            cand = self._words[i]
            if cand in self._candidates and not _same_stem(cand, word):
                out.append(cand)
        return out


def _same_stem(a: str, b: str) -> bool:
    """``film``/``filmmaker``, ``bore``/``bored``: an inflection, not a substitute."""
    short, long = sorted((a, b), key=len)
    return len(short) >= 4 and long.startswith(short[:-1] if len(short) > 4 else short)
