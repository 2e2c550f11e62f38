"""DeepWordBug: character edits in the most important words (Gao et al. 2018).

"Black-box Generation of Adversarial Text Sequences to Evade Deep Learning Classifiers",
IEEE S&P Workshops 2018. Words are ranked by their deletion score (the paper's
"replace-one" score with an empty token); each of the top words gets the four edits of the
paper — swap two adjacent letters, delete one, insert one, substitute one — and the greedy
search keeps the edit that helps most, as for `TextFooler`. Edits turn a word into a
misspelling the tokenizer splits into unfamiliar pieces. Which letters and positions are
drawn from ``seed`` and the sentence, so the same seed gives the same edits.
"""

from __future__ import annotations

import random
import string
from typing import Any

from mlwarden.attacks.text._scoring import Similarity, Victim
from mlwarden.attacks.text._words import Words
from mlwarden.attacks.text.base import TextAttack

_LETTERS = string.ascii_lowercase


def character_edits(word: str, rng: random.Random) -> list[str]:
    """Swap, delete, insert and substitute one character of ``word`` (interior positions
    first, so the word stays readable)."""
    n = len(word)
    if n < 2:
        return []
    lo, hi = (1, n - 1) if n > 3 else (0, n)
    pos = rng.randrange(lo, hi)
    swap_at = min(max(pos, 0), n - 2)
    swapped = word[:swap_at] + word[swap_at + 1] + word[swap_at] + word[swap_at + 2 :]
    deleted = word[:pos] + word[pos + 1 :]
    inserted = word[:pos] + rng.choice(_LETTERS) + word[pos:]
    letter = rng.choice([c for c in _LETTERS if c != word[pos].lower()])
    substituted = word[:pos] + letter + word[pos + 1 :]
    return list(dict.fromkeys(e for e in (swapped, deleted, inserted, substituted) if e != word))


class DeepWordBug(TextAttack):
    """Black-box character-level edits of the most important words (class scores only)."""

    name = "deepwordbug"

    def attack_one(
        self,
        model: Any,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        label: int,
        index: int,
    ) -> Words | None:
        rng = random.Random(f"{self.seed}\x00{original.text}")
        eligible = [i for i, w in enumerate(original.words) if w.isalpha() and len(w) > 1]
        order = self.importance(victim, original, label, eligible)
        edits = {i: character_edits(original.words[i], rng) for i in sorted(eligible)}
        return self.greedy(victim, similarity, original, label, order, lambda _s, i: edits[i])
