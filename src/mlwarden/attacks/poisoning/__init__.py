"""Poisoning attacks that plant backdoors, for fixtures and stress tests.

BadNets patches, blended patterns and label-consistent (clean-label) poisoning, the
triggers they use, and the attack success rate that measures them.
"""

from mlwarden.attacks.poisoning.badnets import BadNets
from mlwarden.attacks.poisoning.base import DirtyLabelAttack, PoisonedDataset, PoisoningAttack
from mlwarden.attacks.poisoning.blended import Blended
from mlwarden.attacks.poisoning.clean_label import CleanLabel
from mlwarden.attacks.poisoning.metrics import attack_success_rate, backdoor_metrics
from mlwarden.attacks.poisoning.triggers import (
    AdditiveTrigger,
    BlendTrigger,
    MaskPatternTrigger,
    PatchTrigger,
    Trigger,
)

__all__ = [
    "AdditiveTrigger",
    "BadNets",
    "BlendTrigger",
    "Blended",
    "CleanLabel",
    "DirtyLabelAttack",
    "MaskPatternTrigger",
    "PatchTrigger",
    "PoisonedDataset",
    "PoisoningAttack",
    "Trigger",
    "attack_success_rate",
    "backdoor_metrics",
]
