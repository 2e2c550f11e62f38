"""Sentences as words between separators, so an attack edits words and keeps everything else.

A `Words` keeps the text around each word (spaces, punctuation) untouched: replacing word
``i`` changes that span only, and the sentence reads as before elsewhere. Words are runs of
letters and digits with an optional ``'s``-style suffix (``film's``, ``isn't``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")

STOP_WORDS: frozenset[str] = frozenset(
    """a about above across after afterwards again against all almost alone along already also
    although always am among amongst an and another any anyhow anyone anything anyway anywhere
    are around as at be became because become becomes becoming been before beforehand behind
    being below beside besides between beyond both but by can cannot could did do does doing
    done down due during each either else elsewhere enough even ever every everyone everything
    everywhere except few for former formerly from further had has have having he hence her
    here hereafter hereby herein hereupon hers herself him himself his how however i if in
    indeed into is it its itself just latter latterly least less many may me meanwhile might
    mine more moreover most mostly much must my myself namely neither never nevertheless next
    no nobody none noone nor not nothing now nowhere of off on once one only onto or other
    others otherwise our ours ourselves out over own per perhaps please quite rather re same
    seem seemed seeming seems several she should since so some somehow someone something
    sometime sometimes somewhere still such than that the their theirs them themselves then
    thence there thereafter thereby therefore therein thereupon these they this those though
    through throughout thru thus to together too toward towards under unless until up upon us
    very via was we well were what whatever when whence whenever where whereafter whereas
    whereby wherein whereupon wherever whether which while whither who whoever whole whom
    whose why will with within without would yet you your yours yourself yourselves s t ll ve
    d m o y isn aren wasn weren don doesn didn hasn haven hadn won wouldn shan shouldn can't
    isn't aren't wasn't weren't don't doesn't didn't hasn't haven't hadn't won't wouldn't
    shouldn't it's that's""".split()
)
"""Words never substituted (TextFooler's rule): function words and negations, whose
replacement changes the grammar or flips the meaning rather than paraphrasing it."""

_SUFFIXES = ("ing", "ly", "ed", "est", "s")


def word_form(word: str) -> str:
    """The inflection class of ``word`` (``ing``, ``ly``, ``ed``, ``est``, ``s`` or none).

    The offline stand-in for TextFooler's part-of-speech check: no tagger ships here, so a
    substitute must share the original's ending class (``boring`` -> ``dull`` is refused
    for ``dulling`` or ``bored``, ``film`` -> ``films`` is refused)."""
    lower = word.lower()
    return next((s for s in _SUFFIXES if lower.endswith(s) and len(lower) > len(s) + 2), "")


def match_case(template: str, word: str) -> str:
    """``word`` cased like ``template`` (``Good`` -> ``Great``, ``GOOD`` -> ``GREAT``)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@dataclass(frozen=True)
class Words:
    """A sentence split into ``words`` and the ``gaps`` around them (``len(words) + 1`` gaps)."""

    words: tuple[str, ...]
    gaps: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Words:
        words, gaps, last = [], [], 0
        for match in _WORD.finditer(text):
            gaps.append(text[last : match.start()])
            words.append(match.group())
            last = match.end()
        gaps.append(text[last:])
        return cls(tuple(words), tuple(gaps))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def text(self) -> str:
        return "".join(g + w for g, w in zip(self.gaps, (*self.words, ""), strict=True))

    def replace(self, index: int, word: str) -> Words:
        """This sentence with word ``index`` replaced (``""`` deletes it)."""
        words = list(self.words)
        words[index] = word
        return Words(tuple(words), self.gaps)

    def spans(self) -> list[tuple[int, int]]:
        """The character span of each word in `text`."""
        out, pos = [], 0
        for gap, word in zip(self.gaps, self.words, strict=False):
            pos += len(gap)
            out.append((pos, pos + len(word)))
            pos += len(word)
        return out


def changed_words(original: Words, adversarial: Words) -> int:
    """How many words differ (both sentences have the same word slots)."""
    return sum(a != b for a, b in zip(original.words, adversarial.words, strict=True))
