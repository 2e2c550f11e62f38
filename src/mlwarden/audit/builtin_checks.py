"""Checks that need nothing beyond the model and data: clean accuracy."""

from __future__ import annotations

from pydantic import Field

from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.findings import Finding, Severity, Table


class AccuracyCheck(CheckConfig):
    """Clean accuracy on the audit data, overall and per class."""

    min_accuracy: float = Field(0.0, ge=0.0, le=1.0, description="finding below this")


@register_check("accuracy", AccuracyCheck, title="Clean accuracy", cost=1)
def accuracy_check(ctx: AuditContext, cfg: AccuracyCheck) -> None:
    import torch

    from mlwarden.audit.text import inputs_of, labels_of

    data = ctx.data
    oracle = ctx.oracle
    x, y = inputs_of(data), labels_of(data)
    step = ctx.batch_size
    preds = torch.cat([oracle.labels(x[i : i + step]).cpu() for i in range(0, len(data), step)])
    correct = preds == y
    acc = float(correct.float().mean())
    ctx.report.metrics["clean_accuracy"] = round(acc, 6)
    ctx.report.metrics["samples"] = len(data)
    ctx.report.headline.append("clean_accuracy")
    rows = []
    for idx, name in enumerate(ctx.spec.class_names):
        mask = y == idx
        if bool(mask.any()):
            rows.append([name, int(mask.sum()), round(float(correct[mask].float().mean()), 4)])
    ctx.report.tables.append(
        Table(
            id="clean-accuracy-per-class",
            title="Clean accuracy per class",
            columns=["class", "samples", "accuracy"],
            rows=rows,
        )
    )
    if acc < cfg.min_accuracy:
        ctx.report.add(
            Finding(
                id="MLW-ACC-001",
                title="Clean accuracy below the required minimum",
                severity=Severity.MEDIUM,
                detail=f"clean accuracy {acc:.3f} < required {cfg.min_accuracy:.3f}",
                check="accuracy",
                evidence={"clean_accuracy": acc, "min_accuracy": cfg.min_accuracy},
            )
        )
