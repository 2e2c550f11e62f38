"""Privacy audit: how much does the model reveal about who was in its training data?

Runs the threshold baseline and LiRA (offline and/or online) on known members and
non-members and reports AUC, TPR at 0.1% and 1% FPR, a ROC plot on log axes (the
regime that matters, per Carlini et al. 2022) and the most exposed records.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from mlwarden.attacks.inference import LiRA, ShadowTraining, ThresholdAttack, membership_metrics
from mlwarden.attacks.inference.lira import ShadowTrainer
from mlwarden.audit.registry import AuditContext, CheckConfig, CheckSkipped, register_check
from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.oracle import ClassifierOracle, Oracle
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.io.dataset import Dataset

MembershipAttackName = Literal["threshold", "lira-offline", "lira-online"]
ATTACKS: tuple[str, ...] = ("threshold", "lira-offline", "lira-online")


def _roc_series(label: str, fpr, tpr, points: int = 200) -> Series:  # type: ignore[no-untyped-def]
    """ROC points, thinned for the report, starting at FPR 1e-4 for the log axis."""
    import numpy as np

    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).astype(int))
    x = np.clip(fpr[keep], 1e-4, 1.0)
    return Series(label=label, x=[float(v) for v in x], y=[float(max(v, 1e-4)) for v in tpr[keep]])


def membership_audit(
    target: Classifier | Oracle,
    members: Dataset,
    non_members: Dataset,
    *,
    attacks: tuple[str, ...] | list[str] = ("threshold", "lira-offline"),
    shadow_models: int = 8,
    shadow_epochs: int = 30,
    shadow_lr: float = 1e-3,
    shadow_batch_size: int = 64,
    seed: int = 0,
    max_auc: float = 0.6,
    max_tpr_at_1_fpr: float = 0.05,
    shadow_training: ShadowTrainer | None = None,
    progress: ProgressCallback = null_progress,
) -> Report:
    """Attack ``target`` with each named membership attack; findings above the thresholds.

    LiRA trains ``shadow_models`` copies of the target's architecture (white-box
    targets only) on random halves of members + non-members, mimicking the target's
    training with ``shadow_epochs``/``shadow_lr``; pass ``shadow_training`` to train them
    exactly as the target was (e.g. with DP-SGD), which LiRA's calibration assumes.
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ParameterError(f"attacks must be among {', '.join(ATTACKS)}, got {list(attacks)}")
    if len(members) < 2 or len(non_members) < 2:
        raise DataError("a membership audit needs at least 2 members and 2 non-members")
    oracle = target if isinstance(target, Oracle) else ClassifierOracle(target)
    spec = oracle.spec
    for name, data in (("members", members), ("non-members", non_members)):
        spec.validate_batch(data.x, what=name)
        spec.validate_labels(data.y, what=f"{name} labels")
    x = torch.cat([members.x, non_members.x])
    y = torch.cat([members.y, non_members.y])
    is_member = torch.cat([torch.ones(len(members), dtype=torch.bool),
                           torch.zeros(len(non_members), dtype=torch.bool)])
    report = Report(title="Membership-inference audit")
    roc: list[Series] = []
    scores_by_attack: dict[str, torch.Tensor] = {}
    if "threshold" in attacks:
        scores_by_attack["threshold"] = ThresholdAttack("loss").score(oracle, x, y)
    lira_variants = [a.split("-", 1)[1] for a in attacks if a.startswith("lira")]
    if lira_variants:
        if not isinstance(target, Classifier):
            raise ParameterError("LiRA trains shadow copies of the model: it needs a white-box "
                                 "model (.pt2 or factory + weights), not an oracle")
        lira = LiRA(shadow_models=shadow_models, variant="offline", seed=seed)
        trainer = shadow_training or ShadowTraining(
            target.module, spec, epochs=shadow_epochs, lr=shadow_lr, batch_size=shadow_batch_size
        )
        shadow_in, shadow_conf = lira.fit_shadows(trainer, x, y, progress=progress)
        for variant in lira_variants:
            lira.variant = variant  # type: ignore[assignment]
            scores_by_attack[f"lira-{variant}"] = lira.score(
                oracle, x, y, shadow_in, shadow_conf
            ).scores
    rows = []
    worst_auc, worst_tpr = 0.0, 0.0
    for name, scores in scores_by_attack.items():
        m = membership_metrics(scores, is_member)
        report.metrics.update(m.as_dict(prefix=f"privacy.{name}."))
        roc.append(_roc_series(f"{name} (AUC {m.auc:.3f})", m.fpr, m.tpr))
        rows.append([name, round(m.auc, 4), round(m.tpr_at_0_1_fpr, 4), round(m.tpr_at_1_fpr, 4)])
        worst_auc, worst_tpr = max(worst_auc, m.auc), max(worst_tpr, m.tpr_at_1_fpr)
    roc.append(Series(label="chance", x=[1e-4, 1.0], y=[1e-4, 1.0]))
    report.metrics["privacy.members"] = len(members)
    report.metrics["privacy.non_members"] = len(non_members)
    report.figures.append(Figure(
        id="membership-roc", title="Membership inference ROC (log-log)", kind="line",
        x_label="false positive rate", y_label="true positive rate", series=roc,
        log_x=True, log_y=True,
        caption="Points far above the diagonal at low FPR mean some training records are "
                "identifiable with confidence.",
    ))
    report.tables.append(Table(id="membership-attacks", title="Membership-inference attacks",
                               columns=["attack", "AUC", "TPR @ 0.1% FPR", "TPR @ 1% FPR"],
                               rows=rows))
    strongest = max(scores_by_attack, key=lambda k: report.metrics[f"privacy.{k}.auc"])  # type: ignore[arg-type,return-value]
    exposed = scores_by_attack[strongest][: len(members)].argsort(descending=True)[:10]
    report.tables.append(Table(
        id="membership-exposed", title=f"Most exposed training records ({strongest})",
        columns=["member index", "class", "score"],
        rows=[[int(i), spec.class_names[int(members.y[i])],
               round(float(scores_by_attack[strongest][i]), 4)] for i in exposed],
    ))
    report.headline += [f"privacy.{strongest}.auc", f"privacy.{strongest}.tpr@1%fpr"]
    evidence = {"auc": round(worst_auc, 4), "tpr@1%fpr": round(worst_tpr, 4), "attack": strongest}
    if worst_auc > max_auc or worst_tpr > max_tpr_at_1_fpr:
        report.add(Finding(
            id="MLW-PRIV-001", title="The model leaks whether records were in its training data",
            severity=Severity.HIGH,
            detail=(f"strongest membership attack {strongest}: AUC {worst_auc:.3f} (limit "
                    f"{max_auc}), TPR at 1% FPR {worst_tpr:.3f} (limit {max_tpr_at_1_fpr}). "
                    "Train with DP-SGD, regularise, or expose labels only."),
            evidence=evidence, atlas=["AML.T0024.000"], owasp=["ML04"], check="privacy",
        ))
    return report


class PrivacyCheck(CheckConfig):
    """Membership-inference audit on known training members vs. the audit data."""

    members: str = Field(description="data file of records the model was trained on")
    non_members: str | None = Field(None, description="held-out records; default: the audit data")
    attacks: list[MembershipAttackName] = Field(
        default_factory=lambda: ["threshold", "lira-offline"]
    )
    shadow_models: int = Field(8, ge=2)
    shadow_epochs: int = Field(30, ge=1)
    shadow_lr: float = Field(1e-3, gt=0)
    samples: int = Field(500, ge=4, description="cap on members and on non-members each")
    max_auc: float = Field(0.6, gt=0, le=1)
    max_tpr_at_1_fpr: float = Field(0.05, ge=0, le=1)


@register_check("privacy", PrivacyCheck, title="Membership inference", cost=80)
def privacy_check(ctx: AuditContext, cfg: PrivacyCheck) -> None:
    from mlwarden.io.data import load_data

    target: Classifier | Oracle
    try:
        target = ctx.classifier
    except CheckSkipped:  # a black-box model: the threshold attack only
        target = ctx.oracle
    members = load_data(ctx.resolve(cfg.members), spec=ctx.spec).take(cfg.samples)
    non_members = (load_data(ctx.resolve(cfg.non_members), spec=ctx.spec) if cfg.non_members
                   else ctx.data).take(cfg.samples)
    attacks = list(cfg.attacks)
    if not isinstance(target, Classifier):
        attacks = [a for a in attacks if a == "threshold"] or ["threshold"]
    sub = membership_audit(target, members, non_members, attacks=attacks,
                           shadow_models=cfg.shadow_models, shadow_epochs=cfg.shadow_epochs,
                           shadow_lr=cfg.shadow_lr, seed=ctx.seed, max_auc=cfg.max_auc,
                           max_tpr_at_1_fpr=cfg.max_tpr_at_1_fpr, progress=ctx.progress)
    ctx.report.merge(sub)
