"""Knockoff extraction of a text classifier with natural-text queries.

The thief owns unlabelled text from some other source (not the victim's training data)
and a pretrained sentence encoder of its own, e.g. all-MiniLM-L6-v2. It sends its texts to
the victim's text oracle (strings in, scores or labels out, every text one query against
the budget), embeds the same texts with its encoder, and trains a small head on the
embeddings to imitate the answers (soft targets from scores, hard ones from labels), as
Krishna et al. ("Thieves on Sesame Street!", ICLR 2020) steal BERT-based APIs. The copy
is the thief's encoder plus that head; it is scored on held-out text by agreement with
the victim's labels (and accuracy on the true ones) at several query counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mlwarden.attacks.extraction.knockoff import (
    ExtractionPoint,
    ExtractionResult,
    KnockoffExtraction,
    default_architecture,
)
from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, OracleError, ParameterError
from mlwarden.core.oracle import Oracle
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.core.spec import InputSpec


@dataclass
class TextCopy:
    """The stolen text model: the thief's encoder, then a head over its embeddings."""

    encoder: Any
    head: Classifier

    def predict(self, texts: Sequence[str]) -> torch.Tensor:
        return self.head.predict(self.encoder.embed(list(texts)).cpu()).cpu()


class TextKnockoff:
    """Steal a text classifier within a query budget, from the thief's own texts."""

    def __init__(
        self,
        budget: int,
        encoder: Any,
        *,
        epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 64,
        query_batch: int = 32,
        checkpoints: int = 4,
        seed: int = 0,
    ) -> None:
        from mlwarden.core.contract import Capability, require

        require(
            encoder,
            (Capability.EMBEDDINGS, Capability.TEXT_INPUTS),
            by="the thief's encoder of text extraction",
            hint="give a sentence-encoder folder, e.g. all-MiniLM-L6-v2",
        )
        # The same checks of budget and sizes as the tensor attack, in one place.
        KnockoffExtraction(
            budget,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            query_batch=query_batch,
            checkpoints=checkpoints,
            seed=seed,
        )
        self.budget = budget
        self.encoder = encoder
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.query_batch = query_batch
        self.checkpoints = checkpoints
        self.seed = seed

    def extract(
        self,
        oracle: Oracle,
        queries: Sequence[str],
        *,
        eval_texts: Sequence[str],
        eval_labels: torch.Tensor,
        eval_y: torch.Tensor | None = None,
        progress: ProgressCallback = null_progress,
    ) -> ExtractionResult:
        """Query ``oracle`` with ``queries`` (shuffled, each at most once) until the budget or
        the texts run out; ``eval_labels`` are the victim's labels on ``eval_texts``."""
        if not oracle.takes_text:
            raise ParameterError("text extraction needs a text oracle (strings in)")
        if len(queries) == 0:
            raise DataError("text extraction needs the thief's query texts; none were given")
        gen = make_generator(self.seed)
        order = torch.randperm(len(queries), generator=gen).tolist()
        pool = [queries[i] for i in order[: self.budget]]
        total = len(pool)
        marks = sorted(
            {max(1, round(total * (i + 1) / self.checkpoints)) for i in range(self.checkpoints)}
        )
        eval_emb = self.encoder.embed(list(eval_texts)).cpu()
        embs: list[torch.Tensor] = []
        answers: list[torch.Tensor] = []
        curve: list[ExtractionPoint] = []
        stopped = (
            None
            if total == self.budget
            else (
                f"after {total} queries: the thief's query set has only {len(queries)} texts "
                f"(budget {self.budget})"
            )
        )
        spent = 0
        head: Classifier | None = None
        interrupted = False
        for mark in marks:
            while spent < mark:
                batch = pool[spent : min(mark, spent + self.query_batch)]
                try:
                    answer = oracle(batch).detach().cpu()
                except OracleError as exc:
                    stopped, interrupted = f"after {spent} queries: {exc}", True
                    break
                embs.append(self.encoder.embed(batch).cpu())
                answers.append(answer)
                spent += len(batch)
                progress("extraction queries", spent, total)
            if not embs:
                break
            head = self._train_head(torch.cat(embs), torch.cat(answers), oracle)
            pred = head.predict(eval_emb).cpu()
            agreement = float((pred == eval_labels.cpu()).float().mean())
            accuracy = None if eval_y is None else float((pred == eval_y.cpu()).float().mean())
            curve.append(ExtractionPoint(spent, agreement, accuracy))
            if interrupted:
                break
        if head is None:
            raise OracleError(f"the oracle answered no query ({stopped})")
        last = curve[-1]
        return ExtractionResult(
            head,
            spent,
            last.agreement,
            last.accuracy,
            curve,
            stopped,
            text_copy=TextCopy(self.encoder, head),
        )

    def _train_head(self, x: torch.Tensor, answers: torch.Tensor, oracle: Oracle) -> Classifier:
        from mlwarden.core.training import fit

        dim = x.shape[1]
        module = default_architecture((dim,), oracle.num_classes)
        torch.manual_seed(self.seed)
        targets = answers.long() if oracle.output == "labels" else answers.float()
        fit(
            module,
            x,
            targets,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        low, high = float(x.min()), float(x.max())
        spec = InputSpec(
            shape=(dim,),
            bounds=(low, high if high > low else low + 1.0),
            class_names=oracle.spec.class_names,
        )  # type: ignore[arg-type]
        return Classifier(module, spec, name=f"knockoff-head on {self.encoder.name} embeddings")
