"""Evaluation: robust accuracy curves with attack ensembles, their sanity checks, and
certified robustness by randomized smoothing.

Names load lazily so that importing the package (e.g. to register the audit check)
does not import torch.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "PRESETS": "mlwarden.attacks.evasion.registry",
    "AttackCost": "mlwarden.evaluation.robustness",
    "RobustnessResult": "mlwarden.evaluation.robustness",
    "evaluate_robustness": "mlwarden.evaluation.robustness",
    "preset_attacks": "mlwarden.attacks.evasion.registry",
    "robustness_findings": "mlwarden.evaluation.robustness",
    "EvasionSettings": "mlwarden.evaluation.evasion",
    "RobustnessSettings": "mlwarden.evaluation.evasion",
    "run_evasion": "mlwarden.evaluation.evasion",
    "run_robustness": "mlwarden.evaluation.evasion",
    "CertificationResult": "mlwarden.evaluation.certify",
    "CertifySettings": "mlwarden.evaluation.certify",
    "SmoothedClassifier": "mlwarden.evaluation.certify",
    "certify_dataset": "mlwarden.evaluation.certify",
    "run_certify": "mlwarden.evaluation.certify",
    "SanityResult": "mlwarden.evaluation.sanity",
    "run_sanity_checks": "mlwarden.evaluation.sanity",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = sorted(_LAZY)
