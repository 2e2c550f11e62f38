"""What every adversarial sentence must keep: `TextConstraints` and its defaults.

No torch import: the settings of ``mlwarden evaluate robustness`` read these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlwarden.core.errors import ParameterError

DEFAULT_MAX_WORDS_SHARE = 0.25
"""At most a quarter of a sentence's words may change (one in four: still the same review)."""
DEFAULT_MIN_SIMILARITY = 0.8
"""Cosine floor of MiniLM sentence embeddings, original vs adversarial (TextFooler's USE
threshold is 0.84 on a 15-word window; whole-sentence MiniLM cosines run a little lower)."""
DEFAULT_TEXT_QUERIES = 2000
"""Victim queries one sentence may cost before the attack gives up on it."""


@dataclass(frozen=True)
class TextConstraints:
    """The bounds of every adversarial sentence (checked on every accepted edit)."""

    max_words_share: float = DEFAULT_MAX_WORDS_SHARE
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    queries: int = DEFAULT_TEXT_QUERIES
    """Victim queries per sentence before the attack gives up on it."""

    def __post_init__(self) -> None:
        if not 0.0 < self.max_words_share <= 1.0:
            raise ParameterError(f"max_words_share must be in (0, 1], got {self.max_words_share}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ParameterError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if self.queries < 1:
            raise ParameterError(f"queries must be >= 1, got {self.queries}")

    def max_changes(self, words: int) -> int:
        """Words one sentence of ``words`` words may change (at least one)."""
        return max(1, int(self.max_words_share * words))
