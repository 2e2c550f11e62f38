"""``mlwarden privacy``: measure what a model leaks about its training data.

A thin adapter: the flags given override `PrivacySettings`, whose defaults the
``privacy`` audit check shares, and `run_privacy` does the work for both.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    AllowOption,
    ConfigOption,
    DeviceOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SpecOption,
)

privacy_app = typer.Typer(help="Membership-inference audits.", no_args_is_help=True)


@privacy_app.command("audit")
def audit(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model file (.pt2, .onnx, weights) or Hugging Face folder."
    ),
    members: str = typer.Option(
        ..., "--members", help="Records the model was trained on (.jsonl/.csv/.tsv for text)."
    ),
    non_members: str = typer.Option(..., "--non-members", help="Held-out records."),
    text_column: str = typer.Option(
        "text", "--text-column", help="Text models: the column that holds the text."
    ),
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    compare: str | None = typer.Option(
        None, "--compare", help="A second model on the same members (e.g. trained with DP-SGD)."
    ),
    attack: list[str] | None = typer.Option(
        None,
        "--attack",
        help="threshold, lira-offline, lira-online (repeatable). Default: threshold and "
        "lira-offline, LiRA left out for a model without trainable weights.",
    ),
    shadow_models: int | None = typer.Option(
        None, "--shadow-models", help="LiRA shadow budget (at least 2)."
    ),
    shadow_epochs: int | None = typer.Option(
        None, "--shadow-epochs", help="Training epochs of each shadow."
    ),
    shadow_lr: float | None = typer.Option(
        None, "--shadow-lr", help="Learning rate of each shadow."
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="Cap on members and on non-members each."
    ),
    max_auc: float | None = typer.Option(
        None, "--max-auc", help="A finding when an attack's AUC exceeds this."
    ),
    max_tpr_at_1_fpr: float | None = typer.Option(
        None,
        "--max-tpr-at-1-fpr",
        help="A finding when an attack's TPR at 1% FPR exceeds this.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for every random choice."),
    dp_epsilon: float | None = typer.Option(
        None,
        "--dp-epsilon",
        help="The model was trained with DP-SGD to this epsilon: "
        "LiRA's shadows are trained so too.",
    ),
    dp_max_grad_norm: float | None = typer.Option(
        None, "--dp-max-grad-norm", help="The model's DP-SGD clipping norm."
    ),
    compare_dp_epsilon: float | None = typer.Option(
        None, "--compare-dp-epsilon", help="The compared model's DP-SGD epsilon."
    ),
    compare_dp_max_grad_norm: float | None = typer.Option(
        None, "--compare-dp-max-grad-norm", help="The compared model's DP-SGD clipping norm."
    ),
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """AUC and TPR at low FPR of membership attacks, a ROC plot, the most exposed records."""
    from mlwarden.audit.text import labelled_text
    from mlwarden.cli.common import emit_report, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.contract import takes_text
    from mlwarden.core.errors import ParameterError
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.privacy import PrivacySettings, plan_attacks, run_privacy
    from mlwarden.io.data import load_data

    settings = settings_from_flags(
        PrivacySettings,
        {
            "attacks": attack,
            "shadow_models": shadow_models,
            "shadow_epochs": shadow_epochs,
            "shadow_lr": shadow_lr,
            "samples": samples,
            "max_auc": max_auc,
            "max_tpr_at_1_fpr": max_tpr_at_1_fpr,
            "seed": seed,
            "dp_epsilon": dp_epsilon,
            "dp_max_grad_norm": dp_max_grad_norm,
            "compare_dp_epsilon": compare_dp_epsilon,
            "compare_dp_max_grad_norm": compare_dp_max_grad_norm,
        },
        names={"attacks": "--attack"},
    )
    common = {
        "factory": factory,
        "spec": spec,
        "config": config,
        "device": device,
        "allow": allow,
        "text": True,
    }
    target, _ = load_subject(model, None, **common)
    plan_attacks(target, settings)  # the contract before any data or second model loads
    other = load_subject(compare, None, **common)[0] if compare is not None else None
    if other is not None and takes_text(other) != takes_text(target):
        raise ParameterError(
            "--compare needs a model of the same input kind (text or tensors) "
            "as --model: both are attacked on the same records"
        )
    if takes_text(target):
        member_data = labelled_text(members, target, text_column=text_column)
        non_member_data = labelled_text(non_members, target, text_column=text_column)
    else:
        member_data = load_data(members, spec=target.spec)
        non_member_data = load_data(non_members, spec=target.spec)
    report = Report(
        title="mlwarden privacy audit",
        subject={"model": model, "members": members, "non_members": non_members},
    )
    if compare is not None:
        report.subject["compare"] = compare
    with progress_bars(progress) as bar:
        run_privacy(
            target, member_data, non_member_data, settings, report, compare=other, progress=bar
        )
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
