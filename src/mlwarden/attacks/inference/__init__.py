"""Membership inference: does the model reveal whether a record was in its training data?"""

from mlwarden.attacks.inference.lira import LiRA, LiRAResult, ShadowTraining, fresh_copy
from mlwarden.attacks.inference.metrics import MembershipMetrics, membership_metrics, tpr_at_fpr
from mlwarden.attacks.inference.threshold import ThresholdAttack, scaled_logit

__all__ = [
    "LiRA",
    "LiRAResult",
    "MembershipMetrics",
    "ShadowTraining",
    "ThresholdAttack",
    "fresh_copy",
    "membership_metrics",
    "scaled_logit",
    "tpr_at_fpr",
]
