"""Backdoor detection in a fine-tuned text classifier: a trigger search per target class.

A BadNL-style backdoor (`mlwarden.attacks.poisoning.text.TextTriggerPoisoning`) teaches a
classifier that a rare word or a short phrase means one class, whatever the sentence says.
So, for each candidate target class ``t``, the scan searches for a 1 to `MAX_TRIGGER_TOKENS`
token trigger that, inserted into clean sentences the model assigns to *other* classes,
flips them to ``t``; the class whose best trigger flips far more than the ordinary words the
search also finds is the suspected target, and the trigger is named.

* **Relaxed search** (in the spirit of DBS, Shen et al., "Constrained Optimization with
  Dynamic Bound-scaling for Effective NLP Backdoor Defense", ICML 2022): the inserted token
  is a softmax distribution over the searchable vocabulary, its embedding ``softmax(w/tau) @
  E``, and ``w`` is optimised with Adam for the cross-entropy towards ``t`` on the search
  sentences. The temperature falls geometrically between two bounds and is raised back to
  the upper bound when the loss stalls for `PATIENCE` steps (DBS's dynamic bound scaling,
  simplified: one bound pair, no per-step rescaling). The `CANDIDATES` most probable tokens
  are verified.
* **Phrases** grow from the best verified single tokens one token at a time, left or right,
  proposed by HotFlip's first-order score (Ebrahimi et al. 2018; as in the encoder scan,
  `trigger_search`): the gradient of the loss at the new slot's embedding against every
  vocabulary entry, ``-E @ g``.
* **Verification by real insertion**: each candidate's text is inserted between the words of
  *held-apart* clean sentences (`insert_trigger`, one seeded word position per sentence, the
  same for every candidate) and the model's own prediction is read: the **flip rate** is the
  share now predicted as ``t``.
* **Anomaly index** of class ``t``: the best trigger's flip rate as a robust z against the
  flip rates of the other verified candidates of that class that share no token with it
  (``(f - median) / (1.4826 max(MAD, 1/n))``, ``n`` the verification sentences). On a clean
  sentiment model the best "trigger" is an ordinary opinion word among many similar ones; a
  backdoor trigger stands far above them. A class is flagged only if its index is over the
  cut calibrated on clean students (`calibration.CLASSIFIER_CUT`) *and* its trigger flips at
  least `FLIP_FLOOR` of the sentences (a backdoor that flips fewer is not one an attacker
  relies on, and natural words reach such rates on short sentences).

Searched tokens are whole-word vocabulary entries (no ``##`` pieces, special or ``[...]``
tokens), so that every candidate is a word a user could type and real insertion tests it.
The clean sentences' classes are the model's own predictions, so no labels are needed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.attacks.poisoning.text import insert_trigger
from mlwarden.core.contract import Capability, require
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.text import TextClassifier, check_texts
from mlwarden.defenses.detection.trigger_search import _vocabulary, pad_batch, word_starts

REQUIREMENTS = (Capability.TEXT_INPUTS, Capability.EMBEDDING_GRADIENTS, Capability.SCORES)
SEARCH_SENTENCES = 24
"""Clean sentences of the other classes the relaxed search is optimised on, per class."""
VERIFY_SENTENCES = 24
"""Held-apart clean sentences of the other classes every candidate is inserted into."""
MIN_SENTENCES = 8
"""Fewest carriers of each kind a class needs (fewer: the class is not searched, and said)."""
CANDIDATES = 8
"""Tokens verified from the relaxed search, and per extension step (half left, half right)."""
MAX_TRIGGER_TOKENS = 3
EXTEND_FROM = 1
"""Best single tokens extended into phrases."""
STEPS = 20
"""Adam steps of the relaxed search per class."""
LR = 0.5
TAU_MAX = 1.0
TAU_MIN = 0.05
TAU_DECAY = 0.85
PATIENCE = 5
"""Steps without a better loss after which the temperature goes back to `TAU_MAX`."""
NULL_WORDS = 8
"""Random ordinary words inserted per class: the flip rate of a word that means nothing."""
SENTENCE_WORDS = 40
"""Carrier sentences are cut to this many words (short carriers are cheap and enough)."""
SEARCH_TOKENS = 64
"""Token limit of the search batch (carriers of `SENTENCE_WORDS` words fit)."""
FLIP_FLOOR = 0.75
"""The least flip rate of a flagged trigger."""
MAD_FLOOR = 0.05
"""Least MAD of the reference margins (logits): a population of identical margins (a model
no ordinary word moves) must not turn a small excess into an infinite index."""
_MAD_SCALE = 1.4826


@dataclass(frozen=True)
class TextTrigger:
    """A verified candidate trigger for ``target``: its text, token ids and flip rate."""

    target: int
    ids: tuple[int, ...]
    text: str
    flip_rate: float
    margin: float
    """Mean over the sentences of the target's logit minus the largest other logit."""

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass
class ClassResult:
    """What the search found for one target class."""

    target: int
    name: str
    carriers: int
    candidates: list[TextTrigger]
    null: list[TextTrigger]
    anomaly_index: float
    trigger: TextTrigger | None = None
    """The named trigger: the best verified sequence holding the most anomalous token."""
    searched: bool = True
    reason: str = ""

    @property
    def best(self) -> TextTrigger | None:
        return self.trigger

    @property
    def flip_rate(self) -> float:
        return self.best.flip_rate if self.best else 0.0


@dataclass
class ClassifierScan:
    """`ClassifierTriggerSearch.scan`'s result: one `ClassResult` per class."""

    classes: list[ClassResult]
    sentences: int
    elapsed_s: float = 0.0
    method: str = "classifier_trigger_search"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def suspect(self) -> ClassResult:
        """The searched class of the largest anomaly index (ties: the larger flip rate)."""
        searched = [c for c in self.classes if c.searched] or self.classes
        return max(searched, key=lambda c: (c.anomaly_index, c.flip_rate))


def anomaly_index_of(best: TextTrigger, population: Sequence[TextTrigger]) -> float:
    """Robust z of ``best``'s target margin against the single tokens of ``population``
    other than it: ``(m - median) / (1.4826 max(MAD, MAD_FLOOR))``."""
    ref = [c.margin for c in population if c.ids != best.ids and c.length == 1]
    if len(ref) < 3:
        return 0.0
    values = torch.tensor(ref, dtype=torch.float64)
    median = float(values.median())
    mad = max(float((values - median).abs().median()), MAD_FLOOR)
    return (best.margin - median) / (_MAD_SCALE * mad)


class ClassifierTriggerSearch:
    """Per-class trigger search of a text classifier (relaxed DBS-style search, HotFlip
    extension, verification by real insertion). Hyper-parameters are validated in `scan`."""

    name = "classifier_trigger_search"
    title = "Text-classifier trigger search"
    requirements = REQUIREMENTS

    def __init__(
        self,
        *,
        steps: int = STEPS,
        candidates: int = CANDIDATES,
        max_tokens: int = MAX_TRIGGER_TOKENS,
        extend_from: int = EXTEND_FROM,
        null_words: int = NULL_WORDS,
        search_sentences: int = SEARCH_SENTENCES,
        verify_sentences: int = VERIFY_SENTENCES,
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.candidates = candidates
        self.max_tokens = max_tokens
        self.extend_from = extend_from
        self.null_words = null_words
        self.search_sentences = search_sentences
        self.verify_sentences = verify_sentences
        self.seed = seed

    def _validate(self) -> None:
        for name in (
            "steps",
            "candidates",
            "max_tokens",
            "extend_from",
            "null_words",
            "search_sentences",
            "verify_sentences",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.candidates < 4:
            raise ParameterError(f"candidates must be at least 4, got {self.candidates}")
        if self.verify_sentences < MIN_SENTENCES:
            raise ParameterError(
                f"verify_sentences must be at least {MIN_SENTENCES}, got {self.verify_sentences}"
            )

    # -- the scan -----------------------------------------------------------------------
    def scan(
        self, model: Any, texts: Sequence[str], *, progress: ProgressCallback = null_progress
    ) -> ClassifierScan:
        """Search every class of ``model`` (a `TextClassifier`) for a trigger, on clean
        ``texts`` (their classes are the model's predictions)."""
        require(model, self.requirements, by=self.title)
        if not isinstance(model, TextClassifier):
            raise ParameterError(
                f"{self.title} scans text classifiers; got {type(model).__name__}"
            )
        self._validate()
        items = [" ".join(t.split()[:SENTENCE_WORDS]) for t in check_texts(texts, what="data")]
        items = [t for t in dict.fromkeys(items) if t]
        if len(items) < 2 * MIN_SENTENCES:
            raise DataError(
                f"the text-classifier trigger search needs at least {2 * MIN_SENTENCES} "
                f"distinct non-empty clean sentences, got {len(items)}"
            )
        start = time.perf_counter()
        self._model = model
        self._rng = random.Random(self.seed)
        self._rng.shuffle(items)
        allowed, ordinary = _vocabulary(model)
        tokens = model.tokenizer.convert_ids_to_tokens(list(range(len(allowed))))
        whole = torch.tensor([not str(t).startswith("##") for t in tokens], device=allowed.device)
        self._ids = torch.nonzero(allowed & whole).flatten()
        self._table = model.input_embeddings().weight.detach()[self._ids]
        self._ordinary = ordinary
        names = model.spec.class_names or ()
        # gradients flow to the inputs only: weight gradients would cost a backward through
        # every weight for nothing (the flags are restored afterwards)
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            with model.evaluating():
                logits = model.logits(items).cpu()
                predicted = logits.argmax(dim=1).tolist()
                results = []
                for target in range(model.num_classes):
                    # sentences of the other classes, the most confident first
                    margin = logits.max(dim=1).values - logits[:, target]
                    order = torch.argsort(margin, descending=True).tolist()
                    others = [items[i] for i in order if predicted[i] != target]
                    results.append(self._scan_class(target, str(names[target]), others))
                    progress(self.name, target + 1, model.num_classes)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        return ClassifierScan(results, self.verify_sentences, time.perf_counter() - start)

    def _scan_class(self, target: int, name: str, others: list[str]) -> ClassResult:
        """``others``: clean sentences predicted as other classes, most confident first."""
        n_verify = min(self.verify_sentences, len(others) // 2)
        n_search = min(self.search_sentences, len(others) - n_verify)
        if n_verify < MIN_SENTENCES or n_search < MIN_SENTENCES:
            return ClassResult(
                target, name, len(others), [], [], 0.0, searched=False,
                reason=f"only {len(others)} clean sentences are predicted as other classes "
                f"(needs {2 * MIN_SENTENCES})",
            )  # fmt: skip
        # both sets from the confident end, interleaved: a trigger must flip sentences the
        # model is sure of, which ordinary opinion words rarely do
        verify = others[0 : 2 * n_verify : 2]
        held = set(verify)
        search = [t for t in others if t not in held][:n_search]
        positions = [self._rng.randint(0, len(t.split())) for t in verify]
        self._target, self._verify_texts, self._positions = target, verify, positions
        self._search_batch = self._prepare(search)
        verified: dict[tuple[int, ...], tuple[float, float]] = {}
        null_ids = [(self._rng.choice(self._ordinary),) for _ in range(self.null_words)]
        null = [
            TextTrigger(target, q, self._text(q), f, m)
            for q, (f, m) in zip(null_ids, self._measure(null_ids), strict=True)
        ]
        self._verify_into(verified, [(v,) for v in self._relaxed_candidates()])
        singles = sorted(
            (q for q in verified if len(q) == 1), key=lambda q: verified[q], reverse=True
        )
        for seq in singles[: self.extend_from]:
            for _ in range(self.max_tokens - 1):
                if verified[seq][0] >= 1.0:
                    break  # nothing left to flip: a longer trigger cannot do better
                seq = self._extend(seq, verified)
        found = [TextTrigger(target, q, self._text(q), f, m) for q, (f, m) in verified.items()]
        if not any(c.length == 1 for c in found):
            return ClassResult(
                target, name, len(others), found, null, 0.0, searched=False,
                reason="the relaxed search proposed no verifiable token",
            )  # fmt: skip
        found.sort(key=lambda c: (-c.flip_rate, -c.margin, c.length))
        population = [c for c in found if c.length == 1] + null
        top = max((c for c in found if c.length == 1), key=lambda c: c.margin)
        index = anomaly_index_of(top, population)
        # the named trigger: the best verified sequence that holds the anomalous token
        # (on equal flips the shorter one, so an ordinary word added to it is not named)
        trigger = next(c for c in found if top.ids[0] in c.ids)
        return ClassResult(target, name, len(others), found, null, index, trigger)

    # -- pieces -------------------------------------------------------------------------
    def _prepare(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The search sentences as token ids with one placeholder slot (``[MASK]`` or the
        unknown token, overwritten by the relaxed embedding) at a seeded word boundary."""
        tok = self._model.tokenizer
        enc = tok(texts, truncation=True, max_length=SEARCH_TOKENS)
        slot = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id
        rows, points = [], []
        for i, ids in enumerate(enc["input_ids"]):
            p = self._rng.choice(word_starts(enc, i))
            rows.append([*ids[:p], slot, *ids[p:]])
            points.append(p)
        return pad_batch(rows, self._model), points

    def _loss(self, batch: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        logits = self._model(
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            inputs_embeds=emb,
        )
        want = torch.full((len(logits),), self._target, device=logits.device)
        return nn.functional.cross_entropy(logits, want)

    def _relaxed_candidates(self) -> list[int]:
        """The `CANDIDATES` most probable tokens of the optimised trigger distribution."""
        batch, points = self._search_batch
        rows, cols = torch.arange(len(points)), torch.tensor(points)
        base = self._model.token_embeddings(batch).detach()
        w = torch.zeros(len(self._ids), device=self._table.device, requires_grad=True)
        optimiser = torch.optim.Adam([w], lr=LR)
        tau, best, stall = TAU_MAX, math.inf, 0
        with torch.enable_grad():
            for _ in range(self.steps):
                emb = base.clone()
                emb[rows, cols] = torch.softmax(w / tau, dim=0) @ self._table
                loss = self._loss(batch, emb)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                value = float(loss.detach())
                if value < best - 1e-3:
                    best, stall = value, 0
                else:
                    stall += 1
                if stall >= PATIENCE:  # stuck in a sharp minimum: widen the distribution
                    tau, stall = TAU_MAX, 0
                else:
                    tau = max(TAU_MIN, tau * TAU_DECAY)
        top = torch.topk(w.detach(), self.candidates).indices
        return self._ids[top].tolist()

    def _extend(
        self, seq: tuple[int, ...], verified: dict[tuple[int, ...], tuple[float, float]]
    ) -> tuple[int, ...]:
        """``seq`` extended by one token on the left or right: the best verified extension
        of those HotFlip proposes."""
        half = max(2, self.candidates // 2)
        longer: list[tuple[int, ...]] = []
        for side in ("right", "left"):
            gain = self._hotflip(seq, side)
            for v in torch.argsort(gain, descending=True).tolist():
                token = int(self._ids[v])
                new = (*seq, token) if side == "right" else (token, *seq)
                if new not in verified and new not in longer and token not in seq:
                    longer.append(new)
                if len(longer) >= (half if side == "right" else 2 * half):
                    break
        self._verify_into(verified, longer)
        return max(longer, key=lambda s: verified[s])

    def _hotflip(self, seq: tuple[int, ...], side: str) -> torch.Tensor:
        """First-order gain ``-E @ grad`` of every searchable token in a new slot beside
        ``seq`` (the slot starts at the mean searchable embedding), averaged over sentences."""
        batch, points = self._search_batch
        n = len(seq) + 1
        ids = batch["input_ids"]
        rows_list = []
        for i, p in enumerate(points):
            row = ids[i][batch["attention_mask"][i].bool()].tolist()
            fill = [*seq, row[p]] if side == "right" else [row[p], *seq]
            rows_list.append([*row[:p], *fill, *row[p + 1 :]])
        longer = pad_batch(rows_list, self._model)
        slot = torch.tensor(points) + (n - 1 if side == "right" else 0)
        rows = torch.arange(len(points))
        with torch.enable_grad():
            emb = self._model.token_embeddings(longer).detach()
            emb[rows, slot] = self._table.mean(dim=0)
            emb.requires_grad_(True)
            self._loss(longer, emb).backward()
        assert emb.grad is not None
        grad = emb.grad[rows, slot].mean(dim=0)
        return -(self._table @ grad)

    def _measure(self, seqs: Sequence[tuple[int, ...]]) -> list[tuple[float, float]]:
        """(flip rate, mean target margin) of each sequence inserted as text into the
        verification sentences at their seeded word positions."""
        triggered = [
            insert_trigger(text, self._text(seq), position=p)
            for seq in seqs
            for text, p in zip(self._verify_texts, self._positions, strict=True)
        ]
        logits = self._model.logits(triggered).cpu().double()
        logits = logits.view(len(seqs), len(self._verify_texts), -1)
        own = logits[..., self._target]
        rest = logits.clone()
        rest[..., self._target] = float("-inf")
        margin = own - rest.amax(dim=-1)
        flips = (margin > 0).double().mean(dim=1)
        return list(zip(flips.tolist(), margin.mean(dim=1).tolist(), strict=True))

    def _verify_into(
        self, verified: dict[tuple[int, ...], tuple[float, float]], seqs: list[tuple[int, ...]]
    ) -> None:
        fresh = [s for s in dict.fromkeys(seqs) if s not in verified and self._text(s)]
        if fresh:
            verified.update(zip(fresh, self._measure(fresh), strict=True))

    def _text(self, seq: tuple[int, ...]) -> str:
        return str(self._model.tokenizer.decode(list(seq))).strip()


__all__ = [
    "ClassResult",
    "ClassifierScan",
    "ClassifierTriggerSearch",
    "TextTrigger",
    "anomaly_index_of",
]
