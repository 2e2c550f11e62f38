"""The text attack contract: constraints, per-sentence examples, results, and the base class.

A text attack is an object: hyper-parameters in ``__init__``; calling it on
``(model, texts, labels)`` checks that ``model`` takes text before any work, attacks each
correctly classified sentence and returns a `TextAttackResult`. Every adversarial sentence
respects `TextConstraints`: at most ``max_words_share`` of its words changed, and a sentence
similarity to the original of at least ``min_similarity``. Sentences the model already
misclassifies are not attacked (they count as not robust). Randomness (DeepWordBug's edits)
comes from ``seed`` and the sentence itself, so the same seed gives the same results.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.attacks.text._scoring import QueryBudgetExhausted, Similarity, Victim
from mlwarden.attacks.text._words import Words, changed_words
from mlwarden.attacks.text.constraints import TextConstraints
from mlwarden.attacks.text.synonyms import EmbeddingNeighbours, SynonymSource
from mlwarden.core.contract import Capability
from mlwarden.core.errors import DataError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.text import as_text_model, check_texts


@dataclass(frozen=True)
class TextExample:
    """One attacked sentence: what it became, whether that fooled the model, what it cost."""

    original: str
    adversarial: str
    label: int
    prediction: int
    """The model's label for ``adversarial`` (``label`` when the attack failed)."""
    success: bool
    words: int
    words_changed: int
    similarity: float
    queries: int

    @property
    def words_share(self) -> float:
        return self.words_changed / self.words if self.words else 0.0


@dataclass
class TextAttackResult:
    """Per-sentence outcome of one attack on a list of sentences, and what it cost."""

    attack: str
    clean_correct: torch.Tensor
    success: torch.Tensor
    adversarial: list[str]
    examples: list[TextExample] = field(default_factory=list)
    """One per attacked (correctly classified) sentence, in input order."""
    gradient_evaluations: int = 0
    seconds: float = 0.0
    constraints: TextConstraints = field(default_factory=TextConstraints)

    @property
    def attacked(self) -> int:
        return len(self.examples)

    @property
    def fooled(self) -> int:
        return sum(e.success for e in self.examples)

    @property
    def success_rate(self) -> float:
        """Share of the correctly classified sentences the attack fooled."""
        return self.fooled / self.attacked if self.attacked else 0.0

    @property
    def queries(self) -> int:
        return sum(e.queries for e in self.examples)

    @property
    def queries_per_sentence(self) -> float:
        return self.queries / self.attacked if self.attacked else 0.0

    @property
    def words_perturbed(self) -> float:
        """Mean share of words changed in the successful adversarial sentences."""
        won = [e.words_share for e in self.examples if e.success]
        return sum(won) / len(won) if won else 0.0


class TextAttack(ABC):
    """Base of the word- and character-level attacks: checks, bookkeeping, the greedy loop.

    Subclasses name themselves, declare what they need beyond text inputs and class scores
    (`needs`), and implement `attack_one`. ``encoder`` (a `TextEncoder`) measures sentence
    similarity and ``synonyms`` proposes substitutes; both default to the packaged MiniLM.
    """

    name = "text-attack"
    needs: tuple[Capability, ...] = (Capability.SCORES,)

    def __init__(
        self,
        *,
        constraints: TextConstraints | None = None,
        encoder: Any = None,
        synonyms: SynonymSource | None = None,
        seed: int = 0,
    ) -> None:
        self.constraints = constraints or TextConstraints()
        self.encoder = encoder
        self.synonyms = synonyms
        self.seed = int(seed)

    # -- shared resources ---------------------------------------------------------------
    def _resources(self, model: Any) -> None:
        if self.encoder is None:
            from mlwarden.attacks.text._scoring import default_encoder

            self.encoder = default_encoder(model.device)
        if self.synonyms is None:
            self.synonyms = EmbeddingNeighbours.of_model(self.encoder)

    # -- the call -------------------------------------------------------------------------
    def __call__(
        self,
        model: Any,
        texts: Sequence[str],
        labels: torch.Tensor | Sequence[int],
        *,
        progress: ProgressCallback = null_progress,
    ) -> TextAttackResult:
        """Attack every sentence of ``texts`` that ``model`` classifies as ``labels``."""
        as_text_model(model, by=f"text attack '{self.name}'", needs=self.needs)
        items = check_texts(texts, what=f"text attack '{self.name}'")
        y = torch.as_tensor(labels, dtype=torch.long).cpu()
        if len(items) != len(y):
            raise DataError(f"{len(items)} texts but {len(y)} labels")
        if len(items) == 0:
            raise DataError("no texts to attack")
        if int(y.min()) < 0 or int(y.max()) >= model.num_classes:
            raise DataError(f"labels must lie in [0, {model.num_classes}), got {y.tolist()[:5]}")
        start = time.perf_counter()
        self._gradients = 0
        self._resources(model)
        clean = model.predict(items).cpu() == y
        success = torch.zeros(len(items), dtype=torch.bool)
        adversarial = list(items)
        result = TextAttackResult(
            self.name, clean, success, adversarial, constraints=self.constraints
        )
        victim = Victim(model, self.constraints.queries)
        similarity = Similarity(self.encoder)
        todo = clean.nonzero().flatten().tolist()
        for n, i in enumerate(todo):
            victim.reset()
            similarity.start(items[i])
            original = Words.of(items[i])
            try:
                best = self.attack_one(model, victim, similarity, original, int(y[i]), i)
            except QueryBudgetExhausted:
                best = None
            example = self._example(victim, similarity, original, best, int(y[i]))
            result.examples.append(example)
            success[i] = example.success
            adversarial[i] = example.adversarial
            progress(f"{self.name}: sentences", n + 1, len(todo))
        result.gradient_evaluations = getattr(self, "_gradients", 0)
        result.seconds = time.perf_counter() - start
        return result

    def _example(
        self,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        best: Words | None,
        label: int,
    ) -> TextExample:
        queries = victim.queries
        if best is None:
            return TextExample(
                original.text, original.text, label, label, False, len(original), 0, 1.0, queries
            )
        text = best.text
        prediction = int(victim.probabilities([text])[0].argmax())
        return TextExample(
            original.text,
            text,
            label,
            prediction,
            prediction != label,
            len(original),
            changed_words(original, best),
            similarity([text])[0],
            queries,
        )

    @abstractmethod
    def attack_one(
        self,
        model: Any,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        label: int,
        index: int,
    ) -> Words | None:
        """The adversarial sentence for ``original`` (fooling or not), or ``None``."""

    # -- the greedy search shared by TextFooler and DeepWordBug ---------------------------
    def importance(
        self, victim: Victim, sentence: Words, label: int, eligible: list[int]
    ) -> list[int]:
        """``eligible`` word positions, most important first: the drop in the true-class
        probability when the word is deleted (TextFooler, Jin et al. 2020, eq. 2, the
        label-unchanged case; one query per word)."""
        if not eligible:
            return []
        texts = [sentence.text] + [sentence.replace(i, "").text for i in eligible]
        probs = victim.probabilities(texts)[:, label]
        drop = (probs[0] - probs[1:]).tolist()
        return [i for _, i in sorted(zip(drop, eligible, strict=True), key=lambda t: (-t[0], t[1]))]

    def greedy(
        self,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        label: int,
        order: list[int],
        candidates: Any,
    ) -> Words | None:
        """Replace words in ``order`` one at a time with the candidate (``candidates(words,
        i)``) that fools the model at the highest similarity, else the one that lowers the
        true-class probability most; stop at the words budget. Candidates under the
        similarity floor are dropped before the victim sees them, so they cost no query."""
        limit = self.constraints.max_changes(len(original))
        current = original
        p_true = float(victim.probabilities([current.text])[0, label])
        changed = 0
        for i in order:
            if changed >= limit:
                break
            options = [current.replace(i, w) for w in candidates(current, i)]
            options = [o for o in options if o.text != current.text]
            if not options:
                continue
            sims = similarity([o.text for o in options])
            kept = [
                (o, s)
                for o, s in zip(options, sims, strict=True)
                if s >= self.constraints.min_similarity
            ]
            if not kept:
                continue
            probs = victim.probabilities([o.text for o, _ in kept])
            fooling = [(s, n) for n, (_, s) in enumerate(kept) if int(probs[n].argmax()) != label]
            if fooling:
                return kept[max(fooling)[1]][0]
            n = int(probs[:, label].argmin())
            if float(probs[n, label]) < p_true:
                current, p_true = kept[n][0], float(probs[n, label])
                changed += 1
        return current if current is not original else None
