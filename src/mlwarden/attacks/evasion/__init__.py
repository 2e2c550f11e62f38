"""Evasion attacks: white-box (FGSM, PGD, APGD, Carlini-Wagner L2, DeepFool) and black-box
(Square, HopSkipJump).

Every attack is called as ``attack(model, x, y)`` and returns an `AttackResult`. The
registry (`ATTACKS`, `PRESETS`, `build_attack`) names each attack with what it needs from
the model, and the ensembles of the robustness evaluation in terms of those names. Names
load lazily, so ``import mlwarden.attacks.evasion`` costs nothing until an attack is
used and a missing optional module fails only when it is asked for.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "FGSM": "mlwarden.attacks.evasion.fgsm",
    "PGD": "mlwarden.attacks.evasion.pgd",
    "APGD": "mlwarden.attacks.evasion.apgd",
    "APGDTargeted": "mlwarden.attacks.evasion.apgd",
    "CarliniWagnerL2": "mlwarden.attacks.evasion.cw",
    "DeepFool": "mlwarden.attacks.evasion.deepfool",
    "SquareAttack": "mlwarden.attacks.evasion.square",
    "HopSkipJump": "mlwarden.attacks.evasion.hopskipjump",
    "ATTACKS": "mlwarden.attacks.evasion.registry",
    "ATTACK_NAMES": "mlwarden.attacks.evasion.registry",
    "AttackEntry": "mlwarden.attacks.evasion.registry",
    "PRESETS": "mlwarden.attacks.evasion.registry",
    "Preset": "mlwarden.attacks.evasion.registry",
    "build_attack": "mlwarden.attacks.evasion.registry",
    "preset_attacks": "mlwarden.attacks.evasion.registry",
    "attack_in_batches": "mlwarden.attacks.evasion._gradients",
    "NORMS": "mlwarden.attacks.evasion._projection",
    "check_norm": "mlwarden.attacks.evasion._projection",
    "clip_to_bounds": "mlwarden.attacks.evasion._projection",
    "lp_norm": "mlwarden.attacks.evasion._projection",
    "project": "mlwarden.attacks.evasion._projection",
    "project_adversarial": "mlwarden.attacks.evasion._projection",
    "random_init": "mlwarden.attacks.evasion._projection",
    "steepest_direction": "mlwarden.attacks.evasion._projection",
}


__getattr__ = lazy_exports(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
