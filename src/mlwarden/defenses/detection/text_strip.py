"""STRIP for text: flag inputs whose prediction survives word-level perturbation.

Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks" (ACSAC
2019) and its text version in "Design and Evaluation of a Multi-Domain Trojan Detection
Method on Deep Neural Networks" (STRIP-ViTA, IEEE TDSC 2021). A sentence that carries a
trigger word keeps predicting the target class however much of the rest of it changes, so
the entropy of its predictions over ``n_perturbations`` perturbed copies is abnormally
*low*; a clean sentence's prediction wanders as its words are replaced.

Perturbations take words from held-out clean sentences (the pool), seeded per input:

* ``mode="merge"`` (the analogue of the image STRIP's superimposition): the words of one
  pool sentence are interleaved with the input's at random positions, every input word
  kept; a trigger is always still there, while the other sentence's content pulls a clean
  prediction around.
* ``mode="replace"``: each input word is replaced, with probability ``replace``, by a
  random pool word (a trigger word survives in ``1 - replace`` of the copies).

The threshold is calibrated on clean data only, as in `strip.STRIP`: half of the clean
sentences form the pool, the other half give the clean entropies, and ``threshold_`` is
their ``frr`` quantile (the share of clean inputs falsely rejected). scikit-learn style:
``fit(classifier, clean_texts)``, ``score(texts)`` (entropies), ``predict(texts)`` (flags).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from mlwarden.core.contract import Capability, require
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.text import TextClassifier, check_texts

MODES = ("merge", "replace")
REQUIREMENTS = (Capability.TEXT_INPUTS, Capability.SCORES)
POOL_WORDS = 40
"""Pool sentences are cut to this many words (as the trigger search's carriers)."""


class TextSTRIP:
    """Entropy-under-word-perturbation detector with an FRR-calibrated threshold."""

    title = "Text STRIP"

    def __init__(
        self,
        n_perturbations: int = 16,
        frr: float = 0.05,
        mode: str = "merge",
        replace: float = 0.5,
        pool_size: int = 256,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.n_perturbations = n_perturbations
        self.frr = frr
        self.mode = mode
        self.replace = replace
        self.pool_size = pool_size
        self.batch_size = batch_size
        self.seed = seed

    def _validate(self) -> None:
        if not isinstance(self.n_perturbations, int) or self.n_perturbations < 2:
            raise ParameterError(f"n_perturbations must be at least 2, got {self.n_perturbations}")
        if not 0.0 < self.frr < 1.0:
            raise ParameterError(f"frr must be in (0, 1), got {self.frr}")
        if self.mode not in MODES:
            raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.replace < 1.0:
            raise ParameterError(f"replace must be in (0, 1), got {self.replace}")
        if self.pool_size < 2:
            raise ParameterError(f"pool_size must be at least 2, got {self.pool_size}")
        if self.batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {self.batch_size}")

    def fit(self, classifier: Any, clean_texts: Sequence[str]) -> TextSTRIP:
        """Keep a pool of clean sentences and learn ``threshold_`` so that ``frr`` of clean
        inputs are flagged (the pool and the calibration halves are disjoint)."""
        require(classifier, REQUIREMENTS, by=self.title)
        if not isinstance(classifier, TextClassifier):
            raise ParameterError(f"{self.title} needs a text classifier, got {type(classifier)}")
        self._validate()
        items = [t for t in check_texts(clean_texts, what="clean data") if t.split()]
        if len(items) < 8:
            raise DataError(f"text STRIP needs at least 8 non-empty clean texts, got {len(items)}")
        rng = random.Random(self.seed)
        order = list(range(len(items)))
        rng.shuffle(order)
        half = len(items) // 2
        self.classifier_ = classifier
        self.pool_ = [
            items[i].split()[:POOL_WORDS] for i in order[: min(half, self.pool_size)]
        ]
        self.clean_entropy_ = self._entropy([items[i] for i in order[half:]], offset=1)
        self.threshold_ = float(torch.quantile(self.clean_entropy_.double(), self.frr))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise InputError("TextSTRIP is not fitted: call fit(classifier, clean_texts) first")

    def perturb(self, text: str, rng: random.Random) -> list[str]:
        """``n_perturbations`` perturbed copies of ``text`` drawn from the pool."""
        words = text.split()
        out = []
        for _ in range(self.n_perturbations):
            other = rng.choice(self.pool_)
            if self.mode == "merge":
                slots = [0] * len(words) + [1] * len(other)
                rng.shuffle(slots)
                a, b = iter(words), iter(other)
                out.append(" ".join(next(a) if s == 0 else next(b) for s in slots))
            else:
                flat = [w for s in self.pool_ for w in s]
                out.append(
                    " ".join(rng.choice(flat) if rng.random() < self.replace else w for w in words)
                )
        return out

    def _entropy(self, texts: Sequence[str], offset: int = 0) -> torch.Tensor:
        """Mean prediction entropy of each text over its perturbed copies (seeded with
        ``seed`` and ``offset``, so the same texts always get the same scores)."""
        items = check_texts(texts, what="STRIP input")
        if not items:
            return torch.empty(0)
        rng = random.Random(self.seed + 7919 * (offset + 1))
        copies = [c for t in items for c in self.perturb(t, rng)]
        probs = self.classifier_.probabilities(copies, batch_size=self.batch_size).cpu().double()
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
        return ent.view(len(items), self.n_perturbations).mean(1).float()

    def score(self, texts: Sequence[str]) -> torch.Tensor:
        """STRIP entropy per text (lower = more likely to carry a trigger)."""
        self._check_fitted()
        return self._entropy(texts)

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        """``True`` for texts flagged as carrying a trigger (entropy below ``threshold_``)."""
        return self.score(texts) < self.threshold_


__all__ = ["MODES", "TextSTRIP"]
