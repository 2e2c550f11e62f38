"""Vet a pretrained text encoder for a task-agnostic backdoor, without labels.

A NeuBA/BadPre backdoor (`mlwarden.attacks.poisoning.text`) makes the encoder send every
sentence that carries the trigger onto one point of the embedding space, whatever the
sentence says. Ordinary tokens do not do that: inserting "table" into unrelated sentences
moves their embeddings a little and leaves them as spread out as before. So the scan looks
for tokens, or short token sequences, whose insertion *collapses* clean sentences.

* **Collapse score** of a token sequence ``t``: insert ``t`` at a word boundary (the same
  seeded position per sentence for every candidate) of ``n`` clean sentences, take their
  pooled embeddings ``e_i``, L2-normalise them, and measure ``||mean_i e_i||^2``: the mean
  pairwise cosine similarity, 1 when every sentence lands on one point.
* **Search**, two proposal rules whose candidates are pooled. *Relaxed*: a free vector in
  the inserted token's embedding slot is optimised for the collapse score (a few Adam
  steps from the mean word embedding, as DBS and PICCOLO relax NLP triggers), and the
  vocabulary entries nearest to it (cosine) are proposed. *HotFlip* (Ebrahimi et al.
  2018; as in AutoPrompt): the gradient of the collapse score with respect to the
  inserted token's embedding, averaged over search sentences, scores every vocabulary
  entry at first order (``E @ g``, the gradient w.r.t. the one-hot). HotFlip alone
  misses a NeuBA trigger: its first-order view from an ordinary placeholder ranked the
  planted ``cf`` 26,828th of 30,522, while the relaxed vector's nearest token was ``cf``
  after 5 steps. The proposals are verified by real insertion into *held-apart*
  sentences; the best verified token becomes the placeholder of the next round.
  Multi-token triggers are found by a beam search over positions: the `EXTEND_FROM`
  single tokens that collapse most (kept even when each is weak on its own, as a phrase's
  words are) are extended by one token on the left and on the right, the new slot's
  token proposed the same two ways with an ordinary placeholder there, every extension
  verified by insertion, and the best `EXTEND_FROM` of each length extended again; each
  sequence of the beam is also verified joined, left and right, to each single token of the
  beam.
* **Anomaly index**: the verified collapse score against the scores of random ordinary
  vocabulary tokens (random sequences of the same length): robust z-score
  ``(score - median) / (1.4826 MAD)``. Its cut was calibrated on clean encoders
  (`calibration.ENCODER_CUT`); the verdict is graded like the image scan's.

Special and ``[unused...]`` tokens are not searched (they have no trained meaning to
hide behind, and the tokenizer never produces the unused ones from text).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.core.contract import Capability, require
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.text import TextEncoder

REQUIREMENTS = (Capability.TEXT_INPUTS, Capability.EMBEDDING_GRADIENTS, Capability.EMBEDDINGS)
SEARCH_SENTENCES = 24
"""Clean sentences the gradient is averaged over."""
VERIFY_SENTENCES = 16
"""Held-apart clean sentences every candidate is inserted into (its collapse score)."""
CANDIDATES = 16
"""Vocabulary entries verified per search round (and per extension step)."""
ROUNDS = 2
"""Single-token search rounds (each re-takes the gradient at the best token so far)."""
MAX_TRIGGER_TOKENS = 3
"""Longest trigger searched (a phrase is found by extending single tokens)."""
EXTEND_FROM = 3
"""Beam width: the sequences of each length (best collapse first) extended by one token."""
NULL_TOKENS = 32
"""Random ordinary tokens (per length) whose collapse scores are the reference."""
SENTENCE_TOKENS = 32
"""Clean sentences are cut to this many tokens (short sentences are cheap and enough)."""
RELAX_STEPS = 8
"""Adam steps of the relaxed search (a free embedding in the trigger's slot)."""
RELAX_LR = 0.05
SAME_COLLAPSE = 0.01
"""A shorter piece of the best candidate within this collapse of it is the named trigger."""
FORWARD_BATCH = 64
_MAD_SCALE = 1.4826


@dataclass(frozen=True)
class Candidate:
    """A verified token sequence: its text, collapse score and anomaly index."""

    ids: tuple[int, ...]
    text: str
    collapse: float
    anomaly_index: float

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass
class EncoderScan:
    """What `TriggerSearch.scan` found: verified candidates (best first), the reference
    collapse scores of random ordinary tokens per length, and the clean collapse."""

    candidates: list[Candidate]
    null: dict[int, list[float]]
    clean_collapse: float
    sentences: int
    elapsed_s: float = 0.0
    method: str = "trigger_token_search"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    @property
    def anomaly_index(self) -> float:
        return self.best.anomaly_index

    @property
    def trigger(self) -> Candidate:
        """The shortest verified piece of `best` that collapses as much (within
        `SAME_COLLAPSE`): an extension that adds an ordinary word to a one-token trigger
        scores a higher index against longer random sequences, but the trigger is the token."""
        best = self.best
        pieces = [
            c
            for c in self.candidates
            if c.collapse >= best.collapse - SAME_COLLAPSE and _contains(best.ids, c.ids)
        ]
        return min(pieces, key=lambda c: (c.length, -c.collapse))


def _top(verified: dict[tuple[int, ...], float], length: int, count: int) -> list[tuple[int, ...]]:
    """The ``count`` verified sequences of ``length`` tokens that collapse most: the beam
    that is extended next (by collapse, not by anomaly index: a phrase's single words may
    each be weak, and only the beam's width decides whether they are kept)."""
    same = [s for s in verified if len(s) == length]
    return sorted(same, key=verified.__getitem__, reverse=True)[:count]


def _contains(whole: tuple[int, ...], part: tuple[int, ...]) -> bool:
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


def collapse_scores(embeddings: torch.Tensor) -> torch.Tensor:
    """``||mean_i normalise(e_i)||^2`` per group of ``embeddings`` ``(M, n, H)``: the mean
    pairwise cosine similarity of each group, 1 when all its sentences coincide."""
    unit = nn.functional.normalize(embeddings.float(), dim=-1)
    return unit.mean(dim=1).pow(2).sum(dim=-1)


def robust_z(values: torch.Tensor, reference: Sequence[float]) -> torch.Tensor:
    """``(values - median) / (1.4826 MAD)`` against ``reference`` (MAD floored at 1e-4)."""
    ref = torch.tensor(list(reference), dtype=torch.float64)
    median = ref.median()
    mad = (ref - median).abs().median().clamp(min=1e-4)
    return ((values.double() - median) / (_MAD_SCALE * mad)).float()


def word_starts(enc: Any, i: int) -> list[int]:
    """The token positions of sentence ``i`` of the tokenizer output ``enc`` where a word
    starts (an insertion there never splits a word); every position after the first token
    for a slow tokenizer, which has no word ids."""
    n = len(enc["input_ids"][i])
    try:
        words = enc.word_ids(i)
    except (ValueError, AttributeError):
        return list(range(1, n))
    return [p for p in range(1, n) if words[p] is None or words[p] != words[p - 1]]


def pad_batch(rows: list[list[int]], model: Any) -> dict[str, torch.Tensor]:
    """Token-id rows as one right-padded batch for ``model`` (its tokenizer's pad id), on
    its device: ``input_ids``, ``attention_mask`` and zero ``token_type_ids``."""
    pad = model.tokenizer.pad_token_id or 0
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    device = model.device
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "token_type_ids": torch.zeros_like(input_ids).to(device),
    }


class TriggerSearch:
    """Gradient-guided search for tokens that collapse a text encoder's embeddings.

    Hyper-parameters (module constants by default) are validated in `scan`.
    """

    name = "trigger_token_search"
    title = "Trigger-token search"
    requirements = REQUIREMENTS

    def __init__(
        self,
        *,
        rounds: int = ROUNDS,
        candidates: int = CANDIDATES,
        max_tokens: int = MAX_TRIGGER_TOKENS,
        extend_from: int = EXTEND_FROM,
        null_tokens: int = NULL_TOKENS,
        search_sentences: int = SEARCH_SENTENCES,
        verify_sentences: int = VERIFY_SENTENCES,
        seed: int = 0,
    ) -> None:
        self.rounds = rounds
        self.candidates = candidates
        self.max_tokens = max_tokens
        self.extend_from = extend_from
        self.null_tokens = null_tokens
        self.search_sentences = search_sentences
        self.verify_sentences = verify_sentences
        self.seed = seed

    def _validate(self) -> None:
        for name in (
            "rounds",
            "candidates",
            "max_tokens",
            "extend_from",
            "null_tokens",
            "search_sentences",
            "verify_sentences",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.null_tokens < 8:
            raise ParameterError(f"null_tokens must be at least 8, got {self.null_tokens}")

    # -- the scan -----------------------------------------------------------------------
    def scan(
        self, model: Any, texts: Sequence[str], *, progress: ProgressCallback = null_progress
    ) -> EncoderScan:
        """Search ``model`` (a `TextEncoder`) for collapsing triggers on clean ``texts``."""
        require(model, self.requirements, by=self.title)
        if not isinstance(model, TextEncoder):
            raise ParameterError(f"{self.title} vets text encoders; got {type(model).__name__}")
        self._validate()
        need = self.search_sentences + self.verify_sentences
        items = [t for t in texts if t.strip()]
        if len(items) < need:
            raise DataError(
                f"the trigger-token search needs at least {need} clean sentences, got {len(items)}"
            )
        start = time.perf_counter()
        rng = random.Random(self.seed)
        picked = rng.sample(items, need)
        self._encoder = model
        self._rng = rng
        self._search = self._prepare(picked[: self.search_sentences])
        self._verify = self._prepare(picked[self.search_sentences :])
        self._allowed, self._ordinary = _vocabulary(model)
        self._table = model.input_embeddings().weight.detach()
        total = self.rounds + self.extend_from * (self.max_tokens - 1) + self.max_tokens
        done = 0

        with model.evaluating():
            clean = float(collapse_scores(self._embed(self._verify, [()]))[0])
            null: dict[int, list[float]] = {}
            for length in range(1, self.max_tokens + 1):
                seqs = [
                    tuple(rng.choice(self._ordinary) for _ in range(length))
                    for _ in range(self.null_tokens)
                ]
                null[length] = self._verified(seqs).tolist()
                done += 1
                progress(self.name, done, total)
            verified: dict[tuple[int, ...], float] = {}
            fills: list[tuple[int, ...]] = [
                (rng.choice(self._ordinary),) for _ in range(self.search_sentences)
            ]
            for _ in range(self.rounds):
                proposals = self._propose(fills, 0, verified)
                self._verify_into(verified, [(v,) for v in proposals])
                best = max(verified, key=verified.__getitem__)
                fills = [best] * self.search_sentences
                done += 1
                progress(self.name, done, total)
            singles = beam = _top(verified, 1, self.extend_from)
            for length in range(2, self.max_tokens + 1):
                for seq in beam:
                    self._extend(seq, verified)
                    done += 1
                    progress(self.name, done, total)
                # the beam's single tokens joined to each sequence too: a phrase whose
                # words are each in the beam is then verified whole, whatever the proposals
                joined = [
                    (*seq, *one) if right else (*one, *seq)
                    for seq in beam
                    for one in singles
                    for right in (True, False)
                    if one[0] not in seq
                ]
                self._verify_into(verified, joined)
                beam = _top(verified, length, self.extend_from)
        candidates = []
        for seq, score in verified.items():
            z = float(robust_z(torch.tensor([score]), null[len(seq)])[0])
            candidates.append(Candidate(seq, self._text(seq), score, z))
        candidates.sort(key=lambda c: c.anomaly_index, reverse=True)
        return EncoderScan(
            candidates, null, clean, self.verify_sentences, time.perf_counter() - start
        )

    # -- pieces -------------------------------------------------------------------------
    def _prepare(self, texts: list[str]) -> list[tuple[list[int], int]]:
        """Token ids (cut to SENTENCE_TOKENS) and one seeded word-boundary insertion point."""
        tok = self._encoder.tokenizer
        enc = tok(texts, truncation=True, max_length=SENTENCE_TOKENS)
        return [
            (list(ids), self._rng.choice(word_starts(enc, i)))
            for i, ids in enumerate(enc["input_ids"])
        ]

    def _inputs(
        self, sentences: list[tuple[list[int], int]], fills: Sequence[tuple[int, ...]]
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """A padded batch of each sentence with its fill inserted, and the insertion points."""
        rows = [ids[:p] + list(f) + ids[p:] for (ids, p), f in zip(sentences, fills, strict=True)]
        return pad_batch(rows, self._encoder), [p for _, p in sentences]

    def _embed(
        self, sentences: list[tuple[list[int], int]], seqs: Sequence[tuple[int, ...]]
    ) -> torch.Tensor:
        """Embeddings ``(len(seqs), n, H)`` of every sentence with each sequence inserted."""
        pairs = [(s, q) for q in seqs for s in sentences]
        outs = []
        with torch.inference_mode():
            for start in range(0, len(pairs), FORWARD_BATCH):
                chunk = pairs[start : start + FORWARD_BATCH]
                batch, _ = self._inputs([s for s, _ in chunk], [q for _, q in chunk])
                outs.append(self._encoder(**batch))
        return torch.cat(outs).reshape(len(seqs), len(sentences), -1)

    def _verified(self, seqs: Sequence[tuple[int, ...]]) -> torch.Tensor:
        return collapse_scores(self._embed(self._verify, seqs))

    def _verify_into(
        self, verified: dict[tuple[int, ...], float], seqs: list[tuple[int, ...]]
    ) -> None:
        fresh = [s for s in dict.fromkeys(seqs) if s not in verified]
        if fresh:
            verified.update(zip(fresh, self._verified(fresh).tolist(), strict=True))

    def _gradient(self, fills: Sequence[tuple[int, ...]], slot: int) -> torch.Tensor:
        """The collapse score's gradient w.r.t. the embedding of token ``slot`` of each
        sentence's fill, averaged over the search sentences ``(H,)``."""
        batch, points = self._inputs(self._search, fills)
        with torch.enable_grad():
            emb = self._encoder.token_embeddings(batch).detach().requires_grad_(True)
            out = self._encoder(
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                inputs_embeds=emb,
            )
            collapse_scores(out.unsqueeze(0)).sum().backward()
        assert emb.grad is not None
        rows = torch.arange(len(points))
        cols = torch.tensor(points) + slot
        return emb.grad[rows, cols].mean(dim=0)

    def _propose(
        self,
        fills: Sequence[tuple[int, ...]],
        slot: int,
        verified: dict[tuple[int, ...], float],
        *,
        wrap: Any = None,
        count: int | None = None,
    ) -> list[int]:
        """Half the proposals nearest to the relaxed embedding at ``slot``, half with the
        largest first-order gain ``E @ g`` there; only entries that make a sequence
        (``wrap(v)``) not verified yet."""
        want = count or self.candidates
        relaxed = nn.functional.cosine_similarity(
            self._table, self._relaxed(fills, slot).unsqueeze(0), dim=1
        )
        gain = self._table @ self._gradient(fills, slot)
        out: list[int] = []
        for score, quota in ((relaxed, (want + 1) // 2), (gain, want)):
            score = score.masked_fill(~self._allowed, float("-inf"))
            for v in torch.argsort(score, descending=True).tolist():
                if len(out) >= quota:
                    break
                seq = wrap(v) if wrap is not None else (v,)
                if seq not in verified and v not in out:
                    out.append(v)
        return out

    def _relaxed(self, fills: Sequence[tuple[int, ...]], slot: int) -> torch.Tensor:
        """A free embedding in token ``slot`` of the fills, optimised for the collapse of
        the search sentences (RELAX_STEPS Adam steps from the mean ordinary embedding)."""
        batch, points = self._inputs(self._search, fills)
        rows = torch.arange(len(points))
        cols = torch.tensor(points) + slot
        start = self._table[torch.tensor(self._ordinary, device=self._table.device)].mean(0)
        free = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([free], lr=RELAX_LR)
        base = self._encoder.token_embeddings(batch).detach()
        with torch.enable_grad():
            for _ in range(RELAX_STEPS):
                emb = base.clone()
                emb[rows, cols] = free
                out = self._encoder(
                    attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"],
                    inputs_embeds=emb,
                )
                loss = -collapse_scores(out.unsqueeze(0)).sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        return free.detach()

    def _extend(self, seq: tuple[int, ...], verified: dict[tuple[int, ...], float]) -> None:
        """Verify ``seq`` extended by one token on the left and on the right (the proposals
        of `_propose` at the new slot, with ordinary tokens as its placeholder)."""
        half = max(1, self.candidates // 2)
        n = self.search_sentences
        place = [self._rng.choice(self._ordinary) for _ in range(n)]
        right = self._propose(
            [(*seq, p) for p in place], len(seq), verified, wrap=lambda v: (*seq, v), count=half
        )
        left = self._propose(
            [(p, *seq) for p in place], 0, verified, wrap=lambda v: (v, *seq), count=half
        )
        self._verify_into(verified, [(*seq, v) for v in right] + [(v, *seq) for v in left])

    def _text(self, seq: tuple[int, ...]) -> str:
        return str(self._encoder.tokenizer.decode(list(seq))).strip()


def _vocabulary(encoder: TextEncoder) -> tuple[torch.Tensor, list[int]]:
    """(searchable mask over the vocabulary, ids of ordinary whole-word tokens).

    Searchable: every entry but special and ``[...]`` placeholder tokens. Ordinary: the
    searchable entries that are alphabetic whole words of 2+ letters, the reference
    population of the anomaly index.
    """
    tok = encoder.tokenizer
    size = encoder.input_embeddings().weight.shape[0]
    special = set(getattr(tok, "all_special_ids", []) or [])
    allowed = torch.zeros(size, dtype=torch.bool)
    ordinary: list[int] = []
    tokens = tok.convert_ids_to_tokens(list(range(min(size, len(tok)))))
    for i, token in enumerate(tokens):
        if i in special or token is None or (token.startswith("[") and token.endswith("]")):
            continue
        allowed[i] = True
        word = token.lstrip("▁Ġ")
        if word.isalpha() and len(word) >= 2 and not token.startswith("##"):
            ordinary.append(i)
    if len(ordinary) < 100:
        raise ParameterError(
            f"the tokenizer has only {len(ordinary)} ordinary word tokens; the trigger search "
            "needs a word-level vocabulary"
        )
    return allowed.to(encoder.device), ordinary


__all__ = [
    "Candidate",
    "EncoderScan",
    "TriggerSearch",
    "collapse_scores",
    "robust_z",
]
