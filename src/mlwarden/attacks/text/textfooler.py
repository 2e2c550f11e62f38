"""TextFooler: word importance by deletion, then greedy synonym substitution (Jin et al. 2020).

"Is BERT Really Robust? A Strong Baseline for Natural Language Attack on Text Classification
and Entailment", AAAI 2020. Words are ranked by how much deleting each lowers the true-class
probability; in that order each non-stop word is replaced by the embedding neighbour that
flips the label at the highest sentence similarity, or else lowers the true-class
probability most. A substitute must keep the word's inflection class (the offline stand-in
for the paper's part-of-speech check, `mlwarden.attacks.text._words.word_form`) and the
sentence similarity above the floor. Where the synonyms come from: `synonyms`.
"""

from __future__ import annotations

from typing import Any

from mlwarden.attacks.text._scoring import Similarity, Victim
from mlwarden.attacks.text._words import STOP_WORDS, Words, match_case, word_form
from mlwarden.attacks.text.base import TextAttack


def substitutable(sentence: Words) -> list[int]:
    """Positions of the words a synonym may replace: alphabetic, not a stop word."""
    return [
        i
        for i, w in enumerate(sentence.words)
        if w.lower() not in STOP_WORDS and w.isalpha() and len(w) > 1
    ]


class TextFooler(TextAttack):
    """Black-box word substitution with importance ranking (class scores only)."""

    name = "textfooler"

    def candidates(self, sentence: Words, i: int) -> list[str]:
        """Embedding neighbours of word ``i`` of the same inflection class, cased like it."""
        word = sentence.words[i]
        assert self.synonyms is not None
        form = word_form(word)
        return [
            match_case(word, c)
            for c in self.synonyms.neighbours(word.lower())
            if word_form(c) == form
        ]

    def attack_one(
        self,
        model: Any,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        label: int,
        index: int,
    ) -> Words | None:
        order = self.importance(victim, original, label, substitutable(original))
        return self.greedy(victim, similarity, original, label, order, self.candidates)
