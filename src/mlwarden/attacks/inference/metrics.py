"""Membership-inference metrics: ROC, AUC and the true-positive rate at low false-positive rates.

Carlini et al. ("Membership Inference Attacks From First Principles", S&P 2022) argue that
average-case metrics such as accuracy or AUC hide whether an attack can confidently identify
*any* member; the TPR at 0.1% and 1% FPR is what a privacy audit should report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlwarden.core.errors import DataError


@dataclass(frozen=True)
class MembershipMetrics:
    auc: float
    tpr_at_0_1_fpr: float
    tpr_at_1_fpr: float
    balanced_accuracy: float
    fpr: np.ndarray
    tpr: np.ndarray

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}auc": round(self.auc, 6),
            f"{prefix}tpr@0.1%fpr": round(self.tpr_at_0_1_fpr, 6),
            f"{prefix}tpr@1%fpr": round(self.tpr_at_1_fpr, 6),
            f"{prefix}balanced_accuracy": round(self.balanced_accuracy, 6),
        }


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR whose FPR does not exceed ``target`` (0 when none does)."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_metrics(scores: torch.Tensor, is_member: torch.Tensor) -> MembershipMetrics:
    """Metrics of scores where *higher means more likely a member*."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s = scores.detach().double().cpu().numpy()
    m = is_member.detach().bool().cpu().numpy()
    if m.all() or not m.any():
        raise DataError("membership metrics need both members and non-members")
    if not np.isfinite(s).all():
        raise DataError("membership scores contain NaN or infinite values")
    fpr, tpr, _ = roc_curve(m, s)
    auc = float(roc_auc_score(m, s))
    return MembershipMetrics(
        auc=auc,
        tpr_at_0_1_fpr=tpr_at_fpr(fpr, tpr, 0.001),
        tpr_at_1_fpr=tpr_at_fpr(fpr, tpr, 0.01),
        balanced_accuracy=float(np.max(0.5 * (tpr + 1.0 - fpr))),
        fpr=fpr,
        tpr=tpr,
    )
