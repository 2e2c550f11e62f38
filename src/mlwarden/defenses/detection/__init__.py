"""Backdoor detection at three levels.

- model level, from weights and a small clean set: `NeuralCleanse` (patch triggers) and
  `UniversalPerturbation` (blended / additive triggers), run together by `scan_model`
  (`run_backdoor_scan` with `BackdoorSettings`: what the command and the audit check call);
- data level, on a training set that may be poisoned: `ActivationClustering` and
  `SpectralSignatures`;
- input level, per request at inference time: `STRIP`.

(``ood.py``, out-of-distribution detection, belongs to the gateway.)
"""

from mlwarden.defenses.detection.activation_clustering import ActivationClustering
from mlwarden.defenses.detection.model_scan import (
    BackdoorSettings,
    backdoor_report,
    run_backdoor_scan,
    scan_model,
    verdict,
)
from mlwarden.defenses.detection.neural_cleanse import NeuralCleanse
from mlwarden.defenses.detection.result import BackdoorScan
from mlwarden.defenses.detection.spectral_signatures import SpectralSignatures
from mlwarden.defenses.detection.strip import STRIP
from mlwarden.defenses.detection.universal_perturbation import UniversalPerturbation

__all__ = [
    "STRIP",
    "ActivationClustering",
    "BackdoorScan",
    "BackdoorSettings",
    "NeuralCleanse",
    "SpectralSignatures",
    "UniversalPerturbation",
    "backdoor_report",
    "run_backdoor_scan",
    "scan_model",
    "verdict",
]
