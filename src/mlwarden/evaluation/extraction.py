"""Model-extraction stress test: how much of the model can an attacker copy per query?"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mlwarden.attacks.extraction import ExtractionResult, KnockoffExtraction
from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table


def extraction_report(result: ExtractionResult, *, strategy: str, access: str,
                      max_agreement: float) -> Report:
    """Metrics, the agreement curve, and a finding when the copy agrees too well."""
    report = Report(title="Model-extraction stress test")
    prefix = f"extraction.{strategy}.{access}"
    report.metrics.update({
        f"{prefix}.queries": result.queries,
        f"{prefix}.agreement": round(result.agreement, 6),
    })
    report.headline.append(f"{prefix}.agreement")
    if result.accuracy is not None:
        report.metrics[f"{prefix}.copy_accuracy"] = round(result.accuracy, 6)
    series = [Series(label=f"agreement ({strategy}, {access})",
                     x=[p.queries for p in result.curve], y=[p.agreement for p in result.curve])]
    if result.accuracy is not None:
        series.append(Series(label="copy accuracy", x=[p.queries for p in result.curve],
                             y=[p.accuracy or 0.0 for p in result.curve]))
    report.figures.append(Figure(
        id=f"extraction-{strategy}-{access}", title="Stolen copy vs. queries spent", kind="line",
        x_label="queries", y_label="agreement with the model", series=series,
        caption="Agreement: share of held-out inputs on which the copy predicts the model's label.",
    ))
    report.tables.append(Table(
        id=f"extraction-curve-{strategy}-{access}", title="Extraction curve",
        columns=["queries", "agreement", "copy accuracy"],
        rows=[[p.queries, round(p.agreement, 4),
               None if p.accuracy is None else round(p.accuracy, 4)] for p in result.curve],
    ))
    if result.stopped:
        report.metrics[f"{prefix}.stopped"] = result.stopped
    if result.agreement >= max_agreement:
        report.add(Finding(
            id="MLW-EXT-001", title="The model can be copied through its query interface",
            severity=Severity.HIGH,
            detail=(f"a knockoff copy trained on {result.queries} {strategy} queries with "
                    f"{access} access agrees with the model on {result.agreement:.1%} of held-out "
                    f"inputs (limit {max_agreement:.0%}). Harden outputs (labels only, perturbed "
                    "scores), rate-limit, and monitor query patterns."),
            evidence={"queries": result.queries, "agreement": round(result.agreement, 4),
                      "strategy": strategy, "access": access},
            atlas=["AML.T0024.002"], owasp=["ML05"], check="extraction",
        ))
    return report


class ExtractionCheck(CheckConfig):
    """Knockoff extraction through the model's oracle within a query budget."""

    budget: int = Field(1000, gt=0)
    strategy: Literal["random", "natural", "synthetic"] = "natural"
    access: Literal["scores", "labels"] = "scores"
    epochs: int = Field(30, gt=0)
    max_agreement: float = Field(0.9, gt=0, le=1)


@register_check("extraction", ExtractionCheck, title="Model extraction", cost=70)
def extraction_check(ctx: AuditContext, cfg: ExtractionCheck) -> None:
    from mlwarden.core.oracle import LabelOnlyOracle
    from mlwarden.io.dataset import Dataset

    data: Dataset = ctx.data
    if len(data) < 4:
        from mlwarden.core.errors import DataError

        raise DataError("the extraction check needs at least 4 audit samples")
    # The attacker's in-domain pool and the held-out evaluation set are disjoint halves.
    pool, held_out = data.split(0.5, seed=ctx.seed)
    base = ctx.oracle
    oracle = LabelOnlyOracle(base) if cfg.access == "labels" else base
    with torch.inference_mode():
        eval_labels = base.labels(held_out.x).cpu()
    attack = KnockoffExtraction(cfg.budget, cfg.strategy, epochs=cfg.epochs, seed=ctx.seed)
    result = attack.extract(oracle, natural=pool.x, eval_x=held_out.x, eval_labels=eval_labels,
                            eval_y=held_out.y, progress=ctx.progress)
    ctx.report.merge(extraction_report(result, strategy=cfg.strategy, access=cfg.access,
                                       max_agreement=cfg.max_agreement))
