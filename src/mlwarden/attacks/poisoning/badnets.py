"""BadNets: a visible patch on a fraction of the training set, relabelled to the target.

Gu, Dolan-Gavitt and Garg, "BadNets: Identifying Vulnerabilities in the Machine
Learning Model Supply Chain", 2017.
"""

from __future__ import annotations

from mlwarden.attacks.poisoning.base import DirtyLabelAttack
from mlwarden.attacks.poisoning.triggers import PatchPattern, PatchTrigger, Position


class BadNets(DirtyLabelAttack):
    """Patch trigger of ``size`` at ``position`` with ``pattern``; ``rate`` of the data poisoned.

    >>> poisoned = BadNets(size=2, position="top-left", target=0, rate=0.1).poison(train)
    """

    name = "badnets"

    def __init__(
        self,
        target: int,
        rate: float = 0.1,
        *,
        size: int | tuple[int, int] = 3,
        position: Position | tuple[int, int] = "bottom-right",
        pattern: PatchPattern = "checkerboard",
        margin: int = 0,
        seed: int = 0,
    ) -> None:
        trigger = PatchTrigger(
            size=size, position=position, pattern=pattern, margin=margin, seed=seed
        )
        super().__init__(trigger, target, rate, seed)
