"""Privacy audit: how much does the model reveal about who was in its training data?

Runs the threshold baseline and LiRA (offline and/or online) on known members and
non-members and reports AUC, TPR at 0.1% and 1% FPR, a ROC plot on log axes (the
regime that matters, per Carlini et al. 2022) and the most exposed records.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from mlwarden.attacks.inference import LiRA, ShadowTraining, ThresholdAttack, membership_metrics
from mlwarden.attacks.inference.lira import ShadowTrainer
from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.audit.text import concat, inputs_of, labels_of
from mlwarden.core.classifier import Classifier
from mlwarden.core.contract import (
    Capability,
    as_oracle,
    describe,
    input_kind,
    missing,
    note_assumptions,
    require,
    takes_text,
)
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.oracle import Oracle
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.io.dataset import Dataset
from mlwarden.io.text_data import TextDataset

MembershipAttackName = Literal["threshold", "lira-offline", "lira-online"]
ATTACKS: tuple[str, ...] = ("threshold", "lira-offline", "lira-online")
DEFAULT_ATTACKS: tuple[MembershipAttackName, ...] = ("threshold", "lira-offline")
LIRA_HINT = (
    "LiRA trains shadow copies of the model: give a white-box model (.pt2, or weights "
    "with a factory), or run the threshold attack only"
)


class PrivacySettings(BaseModel):
    """What a membership audit runs and when it is a finding: the one home of every default.

    ``mlwarden privacy audit`` builds it from the flags given, ``[checks.privacy]`` from
    its table; both hand it to `run_privacy`.
    """

    model_config = ConfigDict(extra="forbid")

    attacks: list[MembershipAttackName] = Field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        min_length=1,
        description="membership attacks; of the default, LiRA is left out for a model "
        "without trainable weights (named attacks are required)",
    )
    shadow_models: int = Field(8, ge=2, description="LiRA shadow budget")
    shadow_epochs: int = Field(30, ge=1, description="training epochs of each shadow")
    shadow_lr: float = Field(1e-3, gt=0, description="learning rate of each shadow")
    samples: int = Field(500, ge=4, description="cap on members and on non-members each")
    max_auc: float = Field(0.6, gt=0, le=1, description="a finding above this AUC")
    max_tpr_at_1_fpr: float = Field(
        0.05, ge=0, le=1, description="a finding above this TPR at 1% FPR"
    )
    seed: int = Field(0, description="seed of the shadows (the audit check: [audit] seed)")
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="the model was trained with DP-SGD to this epsilon: its LiRA shadows are too",
    )
    dp_max_grad_norm: float = Field(1.0, gt=0, description="the model's DP-SGD clipping norm")
    compare_dp_epsilon: float | None = Field(
        None, gt=0, description="the compared model's DP-SGD epsilon (its shadows' too)"
    )
    compare_dp_max_grad_norm: float = Field(
        1.0, gt=0, description="the compared model's DP-SGD clipping norm"
    )


_DEFAULTS = PrivacySettings()


def attack_needs(
    attacks: tuple[str, ...] | list[str],
    shadow_factory: bool = False,
    inputs: Capability = Capability.TENSOR_INPUTS,
) -> tuple[Capability, ...]:
    """What ``attacks`` need of the model: class scores, and trainable weights for LiRA's
    shadows unless a ``shadow_training`` factory builds them; tensor or text ``inputs``
    (both are attacked)."""
    lira = any(a.startswith("lira") for a in attacks)
    return (Capability.SCORES, inputs) + (
        (Capability.TRAINABLE,) if lira and not shadow_factory else ()
    )


def _roc_series(label: str, fpr, tpr, points: int = 200) -> Series:  # type: ignore[no-untyped-def]
    """ROC points, thinned for the report, starting at FPR 1e-4 for the log axis."""
    import numpy as np

    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).astype(int))
    x = np.clip(fpr[keep], 1e-4, 1.0)
    return Series(label=label, x=[float(v) for v in x], y=[float(max(v, 1e-4)) for v in tpr[keep]])


def membership_audit(
    target: Classifier | Oracle,
    members: Dataset | TextDataset,
    non_members: Dataset | TextDataset,
    *,
    attacks: tuple[str, ...] | list[str] = DEFAULT_ATTACKS,
    shadow_models: int = _DEFAULTS.shadow_models,
    shadow_epochs: int = _DEFAULTS.shadow_epochs,
    shadow_lr: float = _DEFAULTS.shadow_lr,
    shadow_batch_size: int = 64,
    seed: int = _DEFAULTS.seed,
    max_auc: float = _DEFAULTS.max_auc,
    max_tpr_at_1_fpr: float = _DEFAULTS.max_tpr_at_1_fpr,
    shadow_training: ShadowTrainer | None = None,
    dp_epsilon: float | None = None,
    dp_max_grad_norm: float = _DEFAULTS.dp_max_grad_norm,
    progress: ProgressCallback = null_progress,
) -> Report:
    """Attack ``target`` with each named membership attack; findings above the thresholds.

    LiRA trains ``shadow_models`` copies of the target's architecture (white-box
    targets only) on random halves of members + non-members, mimicking the target's
    training with ``shadow_epochs``/``shadow_lr``; pass ``shadow_training`` to train them
    exactly as the target was (e.g. with DP-SGD), which LiRA's calibration assumes, and
    then a score oracle is enough. A target trained with DP-SGD (``dp_epsilon``) gets
    DP-SGD shadows with the same epsilon and clipping norm; the recipe is in the report.
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ParameterError(f"attacks must be among {', '.join(ATTACKS)}, got {list(attacks)}")
    lira_variants = [a.split("-", 1)[1] for a in attacks if a.startswith("lira")]
    text = takes_text(target)
    require(
        target,
        attack_needs(attacks, shadow_training is not None, input_kind(target)),
        by="membership inference",
        hint=LIRA_HINT if lira_variants else "",
    )
    if len(members) < 2 or len(non_members) < 2:
        raise DataError("a membership audit needs at least 2 members and 2 non-members")
    oracle = as_oracle(target, by="membership inference", text=True)
    spec = oracle.spec
    if not text:
        for name, data in (("members", members), ("non-members", non_members)):
            spec.validate_batch(data.x, what=name)  # type: ignore[union-attr]
            spec.validate_labels(data.y, what=f"{name} labels")  # type: ignore[union-attr]
    x = concat([inputs_of(members), inputs_of(non_members)])
    y = torch.cat([labels_of(members), labels_of(non_members)])
    is_member = torch.cat(
        [
            torch.ones(len(members), dtype=torch.bool),
            torch.zeros(len(non_members), dtype=torch.bool),
        ]
    )
    report = Report(title="Membership-inference audit")
    roc: list[Series] = []
    scores_by_attack: dict[str, torch.Tensor] = {}
    head_shadows = False  # LiRA's shadows are heads on the target's frozen features
    # The scaled logit ranks records exactly as the loss does, but stays distinct where
    # the loss of confident records rounds to 0 even in float64. LiRA reuses it.
    observed = ThresholdAttack("logit").score(oracle, x, y)
    if "threshold" in attacks:
        scores_by_attack["threshold"] = observed
    if lira_variants:
        lira = LiRA(shadow_models=shadow_models, variant="offline", seed=seed)
        shadow_x = x
        if text and shadow_training is None:
            # Shadows of a transformer: heads on the target's frozen features, computed once.
            from mlwarden.attacks.inference.text_shadows import (
                SHADOW_RECIPE,
                head_features,
                head_shadow_training,
            )

            shadow_x = head_features(target, x)  # type: ignore[arg-type]
            head_shadows = True
            trainer: ShadowTrainer = head_shadow_training(
                target,
                shadow_x,
                epochs=shadow_epochs,
                lr=shadow_lr,
                batch_size=shadow_batch_size,
                dp_epsilon=dp_epsilon,
                dp_max_grad_norm=dp_max_grad_norm,
            )
        else:
            trainer = shadow_training or ShadowTraining(
                target.module,  # type: ignore[union-attr]  # TRAINABLE was required above
                spec,
                epochs=shadow_epochs,
                lr=shadow_lr,
                batch_size=shadow_batch_size,
                dp_epsilon=dp_epsilon,
                dp_max_grad_norm=dp_max_grad_norm,
            )
        recipe = (
            trainer.recipe()
            if isinstance(trainer, ShadowTraining)
            else {"training": "the caller's shadow_training"}
        )
        if shadow_x is not x:
            recipe = {"shadows": SHADOW_RECIPE, "feature_dim": int(shadow_x.shape[1]), **recipe}
        report.metrics["privacy.shadow.dp"] = float(recipe.get("training") == "DP-SGD")
        report.tables.append(
            Table(
                id="lira-shadow-recipe",
                title="How LiRA's shadow models were trained",
                columns=["setting", "value"],
                rows=[[k, v] for k, v in recipe.items()],
            )
        )
        shadow_in, shadow_conf = lira.fit_shadows(trainer, shadow_x, y, progress=progress)
        for variant in lira_variants:
            lira.variant = variant  # type: ignore[assignment]
            result = lira.score(oracle, x, y, shadow_in, shadow_conf, observed=observed)
            scores_by_attack[f"lira-{variant}"] = result.scores
    rows = []
    worst_auc, worst_tpr = 0.0, 0.0
    for name, scores in scores_by_attack.items():
        m = membership_metrics(scores, is_member)
        report.metrics.update(m.as_dict(prefix=f"privacy.{name}."))
        roc.append(_roc_series(f"{name} (AUC {m.auc:.3f})", m.fpr, m.tpr))
        rows.append([name, round(m.auc, 4), round(m.tpr_at_0_1_fpr, 4), round(m.tpr_at_1_fpr, 4)])
        worst_auc, worst_tpr = max(worst_auc, m.auc), max(worst_tpr, m.tpr_at_1_fpr)
        if m.auc < INVERTED_AUC:
            report.add(_inverted_finding(name, m.auc, head_shadows and name.startswith("lira")))
    roc.append(Series(label="chance", x=[1e-4, 1.0], y=[1e-4, 1.0]))
    report.metrics["privacy.members"] = len(members)
    report.metrics["privacy.non_members"] = len(non_members)
    report.figures.append(
        Figure(
            id="membership-roc",
            title="Membership inference ROC (log-log)",
            kind="line",
            x_label="false positive rate",
            y_label="true positive rate",
            series=roc,
            log_x=True,
            log_y=True,
            caption="Points far above the diagonal at low FPR mean some training records are "
            "identifiable with confidence.",
        )
    )
    report.tables.append(
        Table(
            id="membership-attacks",
            title="Membership-inference attacks",
            columns=["attack", "AUC", "TPR @ 0.1% FPR", "TPR @ 1% FPR"],
            rows=rows,
        )
    )
    strongest = max(scores_by_attack, key=lambda k: report.metrics[f"privacy.{k}.auc"])  # type: ignore[arg-type,return-value]
    exposed = scores_by_attack[strongest][: len(members)].argsort(descending=True)[:10]
    member_labels = labels_of(members)
    rows = [
        [
            int(i),
            spec.class_names[int(member_labels[i])],  # type: ignore[index]
            round(float(scores_by_attack[strongest][i]), 4),
        ]
        for i in exposed
    ]
    if text:  # a text record is read, not looked up by index
        for row, i in zip(rows, exposed, strict=True):
            row.append(_snippet(x[int(i)]))  # type: ignore[arg-type]
    report.tables.append(
        Table(
            id="membership-exposed",
            title=f"Most exposed training records ({strongest})",
            columns=["member index", "class", "score"] + (["text"] if text else []),
            rows=rows,
        )
    )
    report.headline += [f"privacy.{strongest}.auc", f"privacy.{strongest}.tpr@1%fpr"]
    evidence = {"auc": round(worst_auc, 4), "tpr@1%fpr": round(worst_tpr, 4), "attack": strongest}
    if worst_auc > max_auc or worst_tpr > max_tpr_at_1_fpr:
        report.add(
            Finding(
                id="MLW-PRIV-001",
                title="The model leaks whether records were in its training data",
                severity=Severity.HIGH,
                detail=(
                    f"strongest membership attack {strongest}: AUC {worst_auc:.3f} (limit "
                    f"{max_auc}), TPR at 1% FPR {worst_tpr:.3f} (limit {max_tpr_at_1_fpr}). "
                    "Train with DP-SGD, regularise, or expose labels only."
                ),
                evidence=evidence,
                atlas=["AML.T0024.000"],
                owasp=["ML04"],
                check="privacy",
            )
        )
    return report


INVERTED_AUC = 0.4
"""An attack's AUC below this ranks members *below* non-members: not privacy, a sign that the
attack's model of the target (LiRA's shadows) does not match how the target was trained."""


def _inverted_finding(attack: str, auc: float, head_shadows: bool) -> Finding:
    why = (
        "its shadows are heads on the model's frozen features, which assumes the encoder never "
        "saw the members; a model fine-tuned end to end breaks that assumption"
        if head_shadows
        else "its shadows were not trained the way this model was"
    )
    return Finding(
        id="MLW-PRIV-003",
        title=f"Attack {attack} is not a measure of this model's leak",
        severity=Severity.INFO,
        check="privacy",
        detail=(
            f"{attack} scores members below non-members (AUC {auc:.3f}, under "
            f"{INVERTED_AUC}): {why}. Read the other attacks (the threshold attack needs no "
            "shadows); this AUC neither clears nor convicts the model."
        ),
        evidence={"attack": attack, "auc": round(auc, 4)},
    )


def _snippet(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_attacks(
    model: Any, settings: PrivacySettings, *, shadow_factory: bool = False
) -> tuple[list[str], list[str]]:
    """The attacks to run on ``model`` and the ones left out, checked against the contract.

    Attacks the user named are required: a model that cannot take them is the contract's
    error. Of the default set, LiRA is left out (and reported) for a model without
    trainable weights, e.g. an ONNX file, so a default audit still runs the threshold attack.
    """
    attacks = list(settings.attacks)
    skipped: list[str] = []
    inputs = input_kind(model)
    if (
        "attacks" not in settings.model_fields_set
        and not shadow_factory
        and missing(model, (Capability.TRAINABLE, inputs))
    ):
        skipped = [a for a in attacks if a.startswith("lira")]
        attacks = [a for a in attacks if a not in skipped] or ["threshold"]
    require(
        model,
        attack_needs(attacks, shadow_factory, inputs),
        by="membership inference",
        hint=LIRA_HINT if any(a.startswith("lira") for a in attacks) else "",
    )
    return attacks, skipped


def _skipped_finding(model: Any, ran: list[str], skipped: list[str]) -> Finding:
    return Finding(
        id="MLW-PRIV-002",
        title="LiRA left out: the model offers no trainable weights",
        severity=Severity.INFO,
        check="privacy",
        location=getattr(model, "name", None),
        detail=(
            f"{describe(model)}; LiRA trains shadow copies of the model, so only "
            f"{', '.join(ran)} ran. Give a white-box model (.pt2, or weights with a factory) "
            f"to run {', '.join(skipped)}."
        ),
        evidence={"ran": ran, "skipped": skipped},
    )


def _name_model(sub: Report, name: str, key: str, *, compared: bool) -> None:
    """In a comparison, make every finding, item and metric say which model it is about.

    Each model's metric keys, headline included, move under ``privacy.<key>.`` (its
    name), so no key ever holds one model's number under the other's name; the compared
    model's item ids gain ``-compare`` so the two stay distinct.
    """
    for finding in sub.findings:
        finding.title = f"{finding.title} [{name}]"
        finding.location = finding.location or name
        finding.evidence = {**finding.evidence, "model": name}
    for item in (*sub.figures, *sub.tables):
        item.title = f"{item.title} [{name}]"
        if compared:
            item.id = f"{item.id}-compare"

    def rename(metric: str) -> str:
        return metric.replace("privacy.", f"privacy.{key}.", 1)

    sub.metrics = {rename(k): v for k, v in sub.metrics.items()}
    sub.headline = [rename(k) for k in sub.headline]


def _metric_keys(names: list[str]) -> list[str]:
    """A metric namespace per model: its name, made key-safe; by role if the names clash."""
    import re

    keys = [re.sub(r"[^A-Za-z0-9_-]+", "_", n).strip("_") or "model" for n in names]
    return (
        keys
        if len(set(keys)) == len(keys) and "shadow" not in keys
        else ["model", "compare"][: len(keys)]
    )


def run_privacy(
    model: Classifier | Oracle,
    members: Dataset | TextDataset,
    non_members: Dataset | TextDataset,
    settings: PrivacySettings,
    report: Report,
    *,
    compare: Classifier | Oracle | None = None,
    shadow_training: ShadowTrainer | None = None,
    progress: ProgressCallback = null_progress,
) -> Report:
    """The membership audit of ``model`` (and of ``compare``, on the same records) into ``report``.

    The one runner behind ``mlwarden privacy audit`` and the ``privacy`` audit check.
    Every model's requirements are checked before any attack runs.
    """
    subjects = [("model", model)] + ([("compare", compare)] if compare is not None else [])
    plans = [
        (label, target, *plan_attacks(target, settings, shadow_factory=shadow_training is not None))
        for label, target in subjects
    ]
    members, non_members = members.take(settings.samples), non_members.take(settings.samples)
    rows = []
    names = [getattr(target, "name", None) or label for label, target in subjects]
    keys = dict(zip([label for label, _ in subjects], _metric_keys(names), strict=True))
    for label, target, attacks, skipped in plans:
        dp = (
            (settings.compare_dp_epsilon, settings.compare_dp_max_grad_norm)
            if label == "compare"
            else (settings.dp_epsilon, settings.dp_max_grad_norm)
        )
        sub = membership_audit(
            target,
            members,
            non_members,
            attacks=attacks,
            shadow_models=settings.shadow_models,
            shadow_epochs=settings.shadow_epochs,
            shadow_lr=settings.shadow_lr,
            seed=settings.seed,
            max_auc=settings.max_auc,
            max_tpr_at_1_fpr=settings.max_tpr_at_1_fpr,
            shadow_training=shadow_training,
            dp_epsilon=dp[0],
            dp_max_grad_norm=dp[1],
            progress=progress,
        )
        if skipped:
            sub.findings.insert(0, _skipped_finding(target, attacks, skipped))
        # Alone, the model's spec note goes once into the (maybe shared) audit report;
        # in a comparison, each model states its own.
        note_assumptions(sub if compare is not None else report, target, "privacy")
        name = getattr(target, "name", None) or label
        if compare is not None:
            _name_model(sub, name, keys[label], compared=label == "compare")
        aucs = [v for k, v in sub.metrics.items() if k.endswith(".auc")]
        tprs = [v for k, v in sub.metrics.items() if k.endswith("tpr@1%fpr")]
        report.merge(sub)
        if compare is not None:
            held_out = as_oracle(target, text=True).labels(inputs_of(non_members)).cpu()
            accuracy = float((held_out == labels_of(non_members)).float().mean())
            rows.append([name, round(accuracy, 4), max(aucs), max(tprs)])  # type: ignore[type-var]
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
    return report


class PrivacyCheck(CheckConfig, PrivacySettings):
    """``[checks.privacy]``: the membership audit on known training members vs. held-out data."""

    members: str = Field(description="data file of records the model was trained on")
    non_members: str | None = Field(None, description="held-out records; default: the audit data")


@register_check("privacy", PrivacyCheck, title="Membership inference", cost=80)
def privacy_check(ctx: AuditContext, cfg: PrivacyCheck) -> None:
    model = ctx.model
    plan_attacks(model, cfg)  # the contract before any data is read
    settings = cfg if "seed" in cfg.model_fields_set else cfg.model_copy(update={"seed": ctx.seed})
    members = ctx.load_data(ctx.resolve(cfg.members))
    non_members = ctx.load_data(ctx.resolve(cfg.non_members)) if cfg.non_members else ctx.data
    run_privacy(model, members, non_members, settings, ctx.report, progress=ctx.progress)
