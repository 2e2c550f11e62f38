"""Robust accuracy of a text classifier under an ensemble of text attacks, and its report.

As for images (`mlwarden.evaluation.robustness`, after AutoAttack): the attacks run in
order and each attacks only the sentences that every earlier one failed to fool, so the
robust accuracy is that of the strongest combination, and the expensive attacks run on few
sentences. The report carries the attack success rate, the share of words perturbed, the
victim queries per sentence and example pairs (original -> adversarial) of every attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mlwarden.attacks.text.base import TextAttack, TextAttackResult, TextConstraints, TextExample
from mlwarden.attacks.text.registry import DEFAULT_TEXT_PRESET, require_text_preset
from mlwarden.core.errors import DataError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress

ATLAS_EVASION = ["AML.T0015", "AML.T0043"]  # Evade ML Model; Craft Adversarial Data
OWASP_EVASION = ["ML01"]  # Input Manipulation Attack
EXAMPLES_PER_ATTACK = 5
"""Example pairs per attack in the report (the successful ones, in input order)."""


@dataclass
class TextRobustnessResult:
    """Per-sentence outcome of a text ensemble: who stood, what fooled it, what it cost."""

    preset: str
    labels: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    adversarial: list[str]
    class_names: tuple[str, ...]
    constraints: TextConstraints
    attacks: list[TextAttackResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())

    @property
    def attack_success_rate(self) -> float:
        """Share of the correctly classified sentences that some attack fooled."""
        correct = int(self.clean_correct.sum())
        return float((self.clean_correct & ~self.robust).sum()) / correct if correct else 0.0

    @property
    def queries(self) -> int:
        return sum(a.queries for a in self.attacks)

    @property
    def queries_per_sentence(self) -> float:
        correct = int(self.clean_correct.sum())
        return self.queries / correct if correct else 0.0

    @property
    def words_perturbed(self) -> float:
        """Mean share of words changed over every successful adversarial sentence."""
        won = [e.words_share for a in self.attacks for e in a.examples if e.success]
        return sum(won) / len(won) if won else 0.0

    def metrics(self) -> dict[str, float | int]:
        p = f"evasion.{self.preset}"
        return {
            "evasion.clean_accuracy": round(self.clean_accuracy, 6),
            f"{p}.robust_accuracy": round(self.robust_accuracy, 6),
            f"{p}.attack_success_rate": round(self.attack_success_rate, 6),
            f"{p}.words_perturbed": round(self.words_perturbed, 6),
            f"{p}.queries_per_sentence": round(self.queries_per_sentence, 2),
            f"{p}.samples": len(self.labels),
            f"{p}.queries": self.queries,
            f"{p}.gradient_evaluations": sum(a.gradient_evaluations for a in self.attacks),
            f"{p}.seconds": round(self.seconds, 3),
        }

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def example_rows(self, per_attack: int = EXAMPLES_PER_ATTACK) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for a in self.attacks:
            won: list[TextExample] = [e for e in a.examples if e.success][:per_attack]
            rows += [
                [
                    a.attack,
                    e.original,
                    e.adversarial,
                    f"{self._name(e.label)} -> {self._name(e.prediction)}",
                    f"{e.words_changed}/{e.words}",
                    round(e.similarity, 3),
                ]
                for e in won
            ]
        return rows

    def to_report(
        self, report: Report | None = None, *, min_robust_accuracy: float | None = None
    ) -> Report:
        """Metrics, the per-attack cost table, the example pairs and the findings."""
        report = report if report is not None else Report(title="mlwarden robustness evaluation")
        report.metrics.update(self.metrics())
        p = f"evasion.{self.preset}"
        report.headline += [f"{p}.robust_accuracy", f"{p}.attack_success_rate"]
        c = self.constraints
        report.tables.append(
            Table(
                id=f"evasion-text-cost-{self.preset}",
                title=(
                    f"Text attacks ({self.preset}): at most {c.max_words_share:.0%} of words "
                    f"changed, sentence similarity >= {c.min_similarity:g}"
                ),
                columns=[
                    "attack",
                    "attacked",
                    "fooled",
                    "success rate",
                    "words perturbed",
                    "queries per sentence",
                    "gradient evaluations",
                    "seconds",
                ],
                rows=[
                    [
                        a.attack,
                        a.attacked,
                        a.fooled,
                        round(a.success_rate, 4),
                        round(a.words_perturbed, 4),
                        round(a.queries_per_sentence, 1),
                        a.gradient_evaluations,
                        round(a.seconds, 2),
                    ]
                    for a in self.attacks
                ],
            )
        )
        report.tables.append(
            Table(
                id=f"evasion-text-examples-{self.preset}",
                title=f"Adversarial examples ({self.preset}): original -> adversarial",
                columns=["attack", "original", "adversarial", "label", "words", "similarity"],
                rows=self.example_rows(),
            )
        )
        report.add(*self.findings(min_robust_accuracy))
        return report

    def findings(self, min_robust_accuracy: float | None) -> list[Finding]:
        """HIGH below the required robust accuracy; MEDIUM when most accuracy is lost."""
        robust, clean = self.robust_accuracy, self.clean_accuracy
        evidence = {
            "preset": self.preset,
            "robust_accuracy": robust,
            "clean_accuracy": clean,
            "attack_success_rate": self.attack_success_rate,
            "max_words_share": self.constraints.max_words_share,
            "min_similarity": self.constraints.min_similarity,
            "samples": len(self.labels),
        }
        where = (
            f"changing at most {self.constraints.max_words_share:.0%} of the words at sentence "
            f"similarity >= {self.constraints.min_similarity:g}"
        )
        if min_robust_accuracy is not None and robust < min_robust_accuracy:
            return [
                Finding(
                    id="MLW-EVA-010",
                    title="Robust accuracy below the required minimum",
                    severity=Severity.HIGH,
                    detail=(
                        f"under the {self.preset} text attacks ({where}) the model keeps "
                        f"{robust:.1%} accuracy (clean {clean:.1%}), below the required "
                        f"{min_robust_accuracy:.1%}. Consider adversarial training with "
                        "these examples, or input normalisation (spelling correction) before "
                        "the model."
                    ),
                    check="evasion",
                    evidence={**evidence, "min_robust_accuracy": min_robust_accuracy},
                    atlas=ATLAS_EVASION,
                    owasp=OWASP_EVASION,
                )
            ]
        if clean > 0 and robust < 0.5 * clean:
            return [
                Finding(
                    id="MLW-EVA-011",
                    title="Model loses most of its accuracy under small text edits",
                    severity=Severity.MEDIUM,
                    detail=f"robust accuracy {robust:.1%} ({where}) is less than half of "
                    f"the clean accuracy {clean:.1%}",
                    check="evasion",
                    evidence=evidence,
                    atlas=ATLAS_EVASION,
                    owasp=OWASP_EVASION,
                )
            ]
        return []


def evaluate_text_robustness(
    model: Any,
    texts: Sequence[str],
    labels: torch.Tensor | Sequence[int],
    *,
    preset: str = DEFAULT_TEXT_PRESET,
    constraints: TextConstraints | None = None,
    seed: int = 0,
    encoder: Any = None,
    synonyms: Any = None,
    attacks: list[TextAttack] | None = None,
    progress: ProgressCallback = null_progress,
) -> TextRobustnessResult:
    """Robust accuracy of text classifier ``model`` on ``(texts, labels)`` under ``preset``.

    ``attacks`` replaces the preset with explicit attacks. A preset the model cannot serve
    (any text preset on an image model; the white-box one on a text oracle) is refused
    before any work.
    """
    start = time.perf_counter()
    chosen = require_text_preset(model, preset) if attacks is None else None
    constraints = constraints or TextConstraints()
    y = torch.as_tensor(labels, dtype=torch.long).cpu()
    if len(texts) == 0:
        raise DataError("cannot evaluate robustness on an empty data set")
    if len(texts) != len(y):
        raise DataError(f"{len(texts)} texts but {len(y)} labels")
    if attacks is None:
        from mlwarden.attacks.text._scoring import default_encoder
        from mlwarden.attacks.text.synonyms import EmbeddingNeighbours

        assert chosen is not None
        encoder = encoder if encoder is not None else default_encoder(model.device)
        synonyms = synonyms if synonyms is not None else EmbeddingNeighbours.of_model(encoder)
        attacks = chosen.build(
            constraints=constraints, encoder=encoder, synonyms=synonyms, seed=seed
        )
    items = list(texts)
    clean = model.predict(items).cpu() == y
    standing = clean.clone()
    adversarial = list(items)
    result = TextRobustnessResult(
        preset=chosen.name if chosen is not None else "custom",
        labels=y,
        clean_correct=clean,
        robust=standing,
        adversarial=adversarial,
        class_names=tuple(model.spec.class_names),
        constraints=constraints,
    )
    for attack in attacks:
        idx = standing.nonzero().flatten()
        if len(idx) == 0:
            break
        res = attack(model, [items[i] for i in idx.tolist()], y[idx], progress=progress)
        for j, i in enumerate(idx.tolist()):
            if bool(res.success[j]):
                standing[i] = False
                adversarial[i] = res.adversarial[j]
        result.attacks.append(res)
    result.seconds = time.perf_counter() - start
    return result
