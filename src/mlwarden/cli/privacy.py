"""``mlwarden privacy``: measure what a model leaks about its training data."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    ConfigOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SeedOption,
    SpecOption,
)

privacy_app = typer.Typer(help="Membership-inference audits.", no_args_is_help=True)


@privacy_app.command("audit")
def audit(
    model: str = typer.Option(..., "--model", "-m", help="Model file (.pt2, .onnx, weights)."),
    members: str = typer.Option(..., "--members", help="Records the model was trained on."),
    non_members: str = typer.Option(..., "--non-members", help="Held-out records."),
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    compare: str | None = typer.Option(
        None, "--compare", help="A second model on the same members (e.g. trained with DP-SGD)."
    ),
    attack: list[str] = typer.Option(
        [], "--attack", help="threshold, lira-offline, lira-online (repeatable)."
    ),
    shadow_models: int = typer.Option(8, "--shadow-models", min=2, help="LiRA shadow budget."),
    shadow_epochs: int = typer.Option(30, "--shadow-epochs", min=1),
    shadow_lr: float = typer.Option(1e-3, "--shadow-lr"),
    samples: int = typer.Option(500, "--samples", min=4, help="Cap on members and non-members."),
    seed: int = SeedOption,
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """AUC and TPR at low FPR of membership attacks, a ROC plot, the most exposed records."""
    from mlwarden.cli.common import emit_report
    from mlwarden.cli.ui import progress_bars
    from mlwarden.config import resolve_spec
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.findings import Report, Table
    from mlwarden.core.oracle import ClassifierOracle, Oracle
    from mlwarden.evaluation.privacy import membership_audit
    from mlwarden.io.data import load_data
    from mlwarden.io.models import load_model

    override = resolve_spec(spec, config)
    report = Report(
        title="mlwarden privacy audit",
        subject={"model": model, "members": members, "non_members": non_members},
    )
    rows = []
    with progress_bars(progress) as bar:
        for label, source in (("model", model), ("compare", compare)):
            if source is None:
                continue
            target = load_model(source, factory=factory, spec=override)
            note_assumptions(report, target)
            mem = load_data(members, spec=target.spec).take(samples)
            non = load_data(non_members, spec=target.spec).take(samples)
            sub = membership_audit(
                target,
                mem,
                non,
                attacks=attack or ["threshold", "lira-offline"],
                shadow_models=shadow_models,
                shadow_epochs=shadow_epochs,
                shadow_lr=shadow_lr,
                seed=seed,
                progress=bar,
            )
            oracle = target if isinstance(target, Oracle) else ClassifierOracle(target)
            accuracy = float((oracle.labels(non.x).cpu() == non.y).float().mean())
            if label == "compare":
                for item in (*sub.figures, *sub.tables):
                    item.id, item.title = (
                        f"{item.id}-compare",
                        f"{item.title} [{Path(source).name}]",
                    )
                sub.metrics = {
                    k.replace("privacy.", "privacy.compare.", 1): v for k, v in sub.metrics.items()
                }
            report.merge(sub)
            aucs = [v for k, v in sub.metrics.items() if k.endswith(".auc")]
            tprs = [v for k, v in sub.metrics.items() if k.endswith("tpr@1%fpr")]
            rows.append([Path(source).name, round(accuracy, 4), max(aucs), max(tprs)])
    if compare is not None:
        report.tables.insert(
            0,
            Table(
                id="privacy-comparison",
                title="Privacy vs. accuracy",
                columns=["model", "test accuracy", "max AUC", "max TPR @ 1% FPR"],
                rows=rows,
            ),
        )
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
