"""HotFlip: word flips chosen by the gradient through the token embeddings (Ebrahimi et al. 2018).

"HotFlip: White-Box Adversarial Examples for Text Classification", ACL 2018. The loss
change of replacing token ``a`` by ``b`` at position ``t`` is estimated to first order as
``(e_b - e_a) . dL/de_t``: one backward pass scores every flip at once. At each step the
``flips`` best-scored flips over the sentence's whole-word tokens (restricted, as
TextFooler's substitutes are, to embedding neighbours of the same inflection class, so a
flip stays a plausible word) are checked with real queries, under the similarity floor; the
best is kept (beam width 1) until the label flips or the words budget is spent. Needs the
model's gradients (`Capability.EMBEDDING_GRADIENTS`): a white-box attack.
"""

from __future__ import annotations

from typing import Any

import torch

from mlwarden.attacks.text._scoring import Similarity, Victim
from mlwarden.attacks.text._words import Words
from mlwarden.attacks.text.base import TextAttack
from mlwarden.attacks.text.textfooler import TextFooler, substitutable
from mlwarden.core.contract import Capability
from mlwarden.core.errors import ParameterError

DEFAULT_FLIPS = 8
"""Flips per step checked with real queries (the gradient ranks them, queries decide)."""


class HotFlip(TextAttack):
    """White-box, gradient-guided word flips through the token-embedding gradient."""

    name = "hotflip"
    needs = (Capability.EMBEDDING_GRADIENTS, Capability.SCORES)

    def __init__(self, *, flips: int = DEFAULT_FLIPS, **kw: Any) -> None:
        super().__init__(**kw)
        if flips < 1:
            raise ParameterError(f"flips must be >= 1, got {flips}")
        self.flips = flips
        self._gradients = 0

    def _gradient(
        self, model: Any, text: str, label: int
    ) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor]:
        """``dL/de`` for each token of ``text``, the tokens' character spans and their ids."""
        enc = model.tokenizer(
            [text],
            truncation=True,
            max_length=model.spec.max_tokens,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
        batch = {k: v.to(model.device) for k, v in enc.items()}
        with model.evaluating(), torch.enable_grad():
            emb = model.token_embeddings(batch).detach().requires_grad_(True)
            logits = model(**batch, inputs_embeds=emb)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.tensor([label], device=logits.device)
            )
            (grad,) = torch.autograd.grad(loss, emb)
        self._gradients += 1
        return grad[0].detach(), offsets, batch["input_ids"][0]

    def attack_one(
        self,
        model: Any,
        victim: Victim,
        similarity: Similarity,
        original: Words,
        label: int,
        index: int,
    ) -> Words | None:
        vocab = model.tokenizer.get_vocab()
        table = model.input_embeddings().weight.detach()
        substitutes = TextFooler(synonyms=self.synonyms).candidates
        eligible = set(substitutable(original))
        limit = self.constraints.max_changes(len(original))
        current, changed = original, set[int]()
        p_true = float(victim.probabilities([current.text])[0, label])
        while len(changed) < limit:
            grad, offsets, ids = self._gradient(model, current.text, label)
            token_at = {span: t for t, span in enumerate(offsets) if span[1] > span[0]}
            scored: list[tuple[float, int, str]] = []
            for i, span in enumerate(current.spans()):
                t = token_at.get(span)
                if i not in eligible or i in changed or t is None:
                    continue
                options = [c for c in substitutes(current, i) if c.lower() in vocab]
                if not options:
                    continue
                rows = torch.tensor([vocab[c.lower()] for c in options], device=table.device)
                gain = (table[rows] - table[ids[t]]) @ grad[t]
                scored += [(float(g), i, c) for g, c in zip(gain, options, strict=True)]
            if not scored:
                break
            scored.sort(key=lambda s: (-s[0], s[1], s[2]))
            options = [(i, current.replace(i, c)) for _, i, c in scored[: self.flips]]
            sims = similarity([o.text for _, o in options])
            kept = [
                (i, o, s)
                for (i, o), s in zip(options, sims, strict=True)
                if s >= self.constraints.min_similarity
            ]
            if not kept:
                break
            probs = victim.probabilities([o.text for _, o, _ in kept])
            fooling = [
                (s, n) for n, (_, _, s) in enumerate(kept) if int(probs[n].argmax()) != label
            ]
            if fooling:
                return kept[max(fooling)[1]][1]
            n = int(probs[:, label].argmin())
            if float(probs[n, label]) >= p_true:
                break
            i, current, _ = kept[n]
            changed.add(i)
            p_true = float(probs[n, label])
        return current if current is not original else None
