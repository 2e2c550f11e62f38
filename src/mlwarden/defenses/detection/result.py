"""The result of a model-level backdoor scan, shared by every reverse-engineering detector."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mlwarden.attacks.poisoning.triggers import Trigger


@dataclass
class BackdoorScan:
    """Per-class trigger sizes, anomaly indices and reverse-engineered triggers.

    ``flagged`` lists the classes whose trigger is anomalously small: with ``threshold``
    ``None`` (the default) those whose size ratio ``median / size`` is over the method's
    calibrated cut (`mlwarden.defenses.detection.calibration`), with a user ``threshold``
    those whose MAD anomaly index is above it; ``target_class`` is the most anomalous of
    them, or ``None``. ``converged`` is False when some class's trigger never reached
    the success rate (its size is then not a minimum, and the scan cannot clear the model).
    ``images`` maps a name (``mask``, ``pattern``, ``trigger``, ``perturbation``) to a
    (K, H, W) or (K, H, W, C) tensor for the report, with its value range.
    """

    method: str
    classes: list[int]
    sizes: torch.Tensor
    success: torch.Tensor
    anomaly_index: torch.Tensor
    threshold: float | None
    images: dict[str, tuple[torch.Tensor, float, float]] = field(default_factory=dict)
    triggers: dict[str, torch.Tensor] = field(default_factory=dict)
    elapsed_s: float = 0.0
    size_name: str = "size"
    converged: bool = True

    @property
    def flagged(self) -> list[int]:
        if self.threshold is None:
            from mlwarden.defenses.detection.calibration import cut_for, size_ratios

            score, cut = size_ratios(self.sizes), cut_for(self.method)
        else:
            score, cut = self.anomaly_index, self.threshold
        score = torch.nan_to_num(score, nan=float("-inf"))
        order = torch.argsort(score, descending=True)
        return [self.classes[int(i)] for i in order if float(score[i]) > cut]

    @property
    def is_backdoored(self) -> bool:
        return bool(self.flagged)

    @property
    def target_class(self) -> int | None:
        flagged = self.flagged
        return flagged[0] if flagged else None

    @property
    def size_ratio(self) -> float:
        """``median / min`` of the trigger sizes: the calibrated statistic."""
        from mlwarden.defenses.detection.calibration import size_ratios

        return float(size_ratios(self.sizes).max())

    @property
    def max_anomaly_index(self) -> float:
        return float(self.anomaly_index.max())

    def trigger_for(self, cls: int) -> Trigger:
        """The reverse-engineered trigger of class ``cls``, ready to `apply` (for unlearning)."""
        from mlwarden.attacks.poisoning.triggers import AdditiveTrigger, MaskPatternTrigger

        pos = self.classes.index(cls)
        if "perturbation" in self.triggers:
            return AdditiveTrigger(self.triggers["perturbation"][pos])
        return MaskPatternTrigger(self.triggers["mask"][pos], self.triggers["pattern"][pos])
