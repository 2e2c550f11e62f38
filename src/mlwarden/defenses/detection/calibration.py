"""Calibrated cuts of the model-level backdoor detectors, and the graded verdict built on them.

The MAD anomaly index of the papers flags a class above 2 "at about 95% confidence",
which over the 10 classes of one model and two detectors flags many clean models (the
clean demo student scored 2.91). A threshold a user can trust is one measured on clean
models trained the way users train. Each detector's statistic here is the **size
ratio** ``median(sizes) / min(sizes)``: how many times smaller the smallest
reverse-engineered trigger is than the typical one (a backdoor's target needs a far
smaller trigger; on clean models the ratio stays close to 1). The joint statistic is
the product of the two detectors' ratios *at the same class*: both detectors pointing
at one class is stronger evidence than either alone.

The cuts were chosen on a CALIBRATION zoo of clean models: cut = largest clean value
times (1 + `MARGIN`). Reproduce them with::

    OMP_NUM_THREADS=1 PYTHONPATH=src:benchmarks python benchmarks/backdoor_calibrate.py

which trains (cached under /tmp/detect-zoo) and scans the zoo with the defaults of
``mlwarden backdoor detect`` (`BackdoorSettings()`, ``--seed 0``, the 450 held-out
digits) and prints the per-model statistics, the largest clean value and the cut.

The transfer audit's inheritance margins (`INHERITANCE`) follow the same rule on the excess
attack success rate of students of clean teachers (`benchmarks/inheritance_calibrate.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mlwarden.core.findings import Severity

if TYPE_CHECKING:
    from mlwarden.defenses.detection.result import BackdoorScan

MARGIN = 0.10
"""Cut = largest statistic over the clean calibration zoo x (1 + MARGIN)."""
WEAK_BAND = 0.15
"""A statistic within this fraction below its cut is a weak anomaly (LOW, not conclusive)."""
FAR_FACTOR = 1.5
"""One detector alone at or above FAR_FACTOR x its cut is conclusive (HIGH)."""
JOINT = "joint"
"""Name of the joint statistic (product of the two detectors' ratios at one class)."""

CALIBRATION_ZOO = (
    "14 clean digits models: SmallCNN width 16 (seeds 100-103), width 8 (104, 105), "
    "width 32 (106); Flatten+MLP hidden (64, 64) (107, 108), (128, 128) (109); a "
    "global-pooling CNN width 24 (110), 16 (111); the demo teacher and student"
)


@dataclass(frozen=True)
class Cut:
    """A calibrated cut: the largest clean value it sits above and its measured FPR."""

    statistic: str
    cut: float
    largest_clean: float
    false_positives: int
    models: int

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.models


# Measured by benchmarks/backdoor_calibrate.py (command in the module docstring) on
# CALIBRATION_ZOO, scanned with BackdoorSettings() defaults (300 steps, batch 64, 450
# held-out digits, seed 0); cut = largest_clean x 1.10, rounded up to 2 decimals.
# Largest clean values: Neural Cleanse 2.169 and joint 2.875 (both cal-mlp-w64-s107),
# universal perturbation 1.338 (cal-gap-w16-s111). The demo student scored 1.31 / 1.22.
CUTS: dict[str, Cut] = {
    "neural_cleanse": Cut("median / min mask L1 norm", 2.39, 2.169, 0, 14),
    "universal_perturbation": Cut("median / min perturbation L2 norm", 1.48, 1.338, 0, 14),
    JOINT: Cut("product of both ratios at one class", 3.17, 2.875, 0, 14),
}


@dataclass(frozen=True)
class InheritanceCut:
    """The excess-ASR cuts of the transfer audit's inheritance verdict (MLW-BKD-030), set by
    the rule of the detector cuts on clean teacher -> student pairs: ``medium`` = largest
    clean excess x (1 + `MARGIN`), ``high`` = `FAR_FACTOR` x ``medium``, rounded up to 2
    decimals."""

    medium: float
    high: float
    largest_clean: float
    clean_pairs: int
    false_positives: int


# Measured by benchmarks/inheritance_calibrate.py (``--seeds 5``): 5 SmallCNN teachers
# trained on one half of digits; on the other half, one student per strategy of ``mlwarden
# transfer --strategy compare`` (TransferSettings() defaults) and the from-scratch reference,
# each student audited with BadNets 3x3 patch triggers on all 10 classes (what --trigger /
# --target hands in): 300 clean pairs. Largest clean excess 0.223 (a dp student, trigger
# on class 6: ASR 0.38 against the reference's 0.15), which the old uncalibrated margin 0.2
# flagged; without dp the largest is 0.074. Students of 5 BadNets teachers (rate 0.1):
# last_k and full 0.92 to 1.00 (all high), linear_probe 0.30 to 0.80 (all over the cut),
# full_reinit 2 of 5 over (0.26, 0.27), fineprune 1 of 5 (0.52; the others 0.11 to 0.17,
# partial inheritance that 0.2 missed too), dp none (at most 0.03).
INHERITANCE = InheritanceCut(
    medium=0.25, high=0.38, largest_clean=0.223, clean_pairs=300, false_positives=0
)


def size_ratios(sizes: torch.Tensor) -> torch.Tensor:
    """Per class ``median(sizes) / size_k`` (above 1: smaller trigger than the typical class).

    A zero or non-finite size gives ``inf`` / NaN, which `converged` reports.
    """
    sizes = sizes.double()
    median = sizes.quantile(0.5)
    return (median / sizes).float()


def cut_for(method: str) -> float:
    """The calibrated cut of ``method``'s size ratio."""
    return CUTS[method].cut


@dataclass
class Evidence:
    """One statistic of the verdict: its value, the class it points at and its cut."""

    statistic: str  # a method name or JOINT
    value: float
    target: int | None
    cut: float
    calibrated: bool
    false_positive_rate: float | None  # on the calibration zoo; None for a user threshold

    @property
    def over(self) -> bool:
        return self.value > self.cut

    @property
    def weak(self) -> bool:
        return not self.over and self.value >= (1 - WEAK_BAND) * self.cut

    @property
    def far(self) -> bool:
        return self.value >= FAR_FACTOR * self.cut

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "statistic": round(self.value, 4),
            "cut": round(self.cut, 4),
            "class": self.target,
            "calibrated": self.calibrated,
        }
        if self.false_positive_rate is not None:
            cut = CUTS[self.statistic]
            out["false_positive_rate"] = self.false_positive_rate
            out["calibration"] = f"{cut.false_positives} of {cut.models} clean models over the cut"
        return out


@dataclass
class Assessment:
    """The graded verdict over the detectors' scans."""

    severity: Severity  # INFO (nothing), LOW (weak), MEDIUM (one detector), HIGH (conclusive)
    target: int | None
    evidence: list[Evidence]
    unconverged: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def detected(self) -> bool:
        return self.severity >= Severity.MEDIUM


def method_evidence(scan: BackdoorScan) -> Evidence:
    """The statistic of one scan: the size ratio (calibrated) or the anomaly index (user cut)."""
    if scan.threshold is None:
        ratios = size_ratios(scan.sizes)
        pos = int(torch.nan_to_num(ratios, nan=-1.0).argmax())
        value = float(ratios[pos])
        cut = CUTS.get(scan.method)
        return Evidence(
            scan.method,
            value,
            scan.classes[pos],
            cut_for(scan.method),
            True,
            None if cut is None else cut.false_positive_rate,
        )
    idx = scan.anomaly_index
    pos = int(torch.nan_to_num(idx, nan=float("-inf")).argmax())
    return Evidence(scan.method, float(idx[pos]), scan.classes[pos], scan.threshold, False, None)


def joint_evidence(scans: Sequence[BackdoorScan]) -> Evidence | None:
    """The product of both calibrated ratios at the class where it is largest."""
    if len(scans) != 2 or any(s.threshold is not None for s in scans):
        return None
    a, b = scans
    if a.classes != b.classes:
        return None
    joint = size_ratios(a.sizes) * size_ratios(b.sizes)
    pos = int(torch.nan_to_num(joint, nan=-1.0).argmax())
    cut = CUTS[JOINT]
    value = float(joint[pos])
    return Evidence(JOINT, value, a.classes[pos], cut.cut, True, cut.false_positive_rate)


def converged(scan: BackdoorScan) -> bool:
    """Every trigger size is finite and positive and every class reached the success rate."""
    finite = bool(torch.isfinite(scan.sizes).all()) and bool((scan.sizes > 0).all())
    return finite and scan.converged


def assess(scans: Sequence[BackdoorScan]) -> Assessment:
    """Grade the scans: HIGH when the detectors agree on a class or one is far over its cut,
    MEDIUM when one is over, LOW when a statistic is within `WEAK_BAND` below its cut.

    A detector that did not converge cannot clear the model: the assessment is at least
    MEDIUM ("inconclusive") unless another detector found the backdoor.
    """
    per_method = [method_evidence(s) for s in scans]
    joint = joint_evidence(scans)
    unconverged = [s.method for s in scans if not converged(s)]
    evidence = per_method + ([joint] if joint is not None else [])
    over = [e for e in per_method if e.over]
    agree = len(over) == 2 and over[0].target == over[1].target
    joint_agrees = (
        joint is not None
        and joint.over
        and all(e.target == joint.target for e in per_method)
        and any(e.over for e in per_method)
    )
    far = [e for e in over if e.far]
    if agree or joint_agrees:
        target = joint.target if joint_agrees and joint is not None else over[0].target
        methods = " and ".join(e.statistic for e in per_method)
        return Assessment(
            Severity.HIGH, target, evidence, unconverged, f"both {methods} point at class {target}"
        )
    if far:
        best = max(far, key=lambda e: e.value / e.cut)
        return Assessment(
            Severity.HIGH,
            best.target,
            evidence,
            unconverged,
            f"the {best.statistic} statistic alone is far over its cut ({best.value:.2f} >= "
            f"{FAR_FACTOR:g} x {best.cut:g})",
        )
    if over or (joint is not None and joint.over):
        candidates = over or [joint]  # type: ignore[list-item]
        best = max(candidates, key=lambda e: e.value / e.cut)
        others = [e.statistic for e in per_method if e is not best and not e.over]
        reason = f"only {best.statistic} is over its cut ({best.value:.2f} > {best.cut:g})"
        if others:
            reason += f"; {', '.join(others)} does not confirm it"
        return Assessment(Severity.MEDIUM, best.target, evidence, unconverged, reason)
    if unconverged:
        return Assessment(
            Severity.MEDIUM,
            None,
            evidence,
            unconverged,
            f"{', '.join(unconverged)} did not converge: the scan is inconclusive",
        )
    weak = [e for e in evidence if e.weak]
    if weak:
        best = max(weak, key=lambda e: e.value / e.cut)
        return Assessment(
            Severity.LOW,
            best.target,
            evidence,
            unconverged,
            f"the strongest statistic, {best.statistic} at class {best.target}, is within "
            f"{WEAK_BAND:.0%} below its cut ({best.value:.2f} vs {best.cut:g})",
        )
    return Assessment(
        Severity.INFO, None, evidence, unconverged, "every statistic is under its cut"
    )


# -- text encoders (trigger_search / encoder_scan) ------------------------------------------
ENCODER_CALIBRATION_ZOO = (
    "2 clean encoders: the sentence-transformers all-MiniLM-L6-v2 and a copy fine-tuned for "
    "sentiment on 300 Rotten Tomatoes sentences (benchmarks/encoder_backdoor_zoo.py)"
)
# Measured with benchmarks/encoder_backdoor_zoo.py's teachers (search defaults, seed 0, the
# 200 held-out review sentences, through TriggerSearch().scan as the command runs it): the
# best candidate's anomaly index was 5.20 on MiniLM and 8.12 on the fine-tuned copy (both
# 3-token candidates); cut = 8.12 x (1 + MARGIN) = 8.94. (The HotFlip-only search of an
# earlier version gave 3.01 and 5.59.)
# Not yet re-measured for the beam search over positions (EXTEND_FROM sequences per length,
# the beam's tokens joined): `python benchmarks/encoder_backdoor_zoo.py --calibrate` measures
# the cut on a clean set independent of the zoo's scan set (plot-summary sentences).
ENCODER_CUT = Cut("best trigger candidate's robust z over random tokens", 8.94, 8.12, 0, 2)

# -- text classifiers (classifier_trigger_search / text_classifier_scan) ---------------------
CLASSIFIER_CALIBRATION_ZOO = (
    "1 clean student: all-MiniLM-L6-v2 fully fine-tuned (2 epochs, lr 1e-4) on 400 Rotten "
    "Tomatoes sentences (benchmarks/text_classifier_backdoor_zoo.py, clean-s0)"
)
# Measured with ClassifierTriggerSearch() defaults, seed 0, on the zoo's 500 held-out sentences:
# the clean student's largest index was 5.03 (class negative, 'disappointment shallow
# unfortunately', flip rate 0.92; class positive 3.49); cut = 5.03 x (1 + MARGIN), rounded up.
# One clean model is a first cut, not a calibration (docs/text_backdoor.md).
CLASSIFIER_CUT = Cut(
    "robust z of the best token's target margin over the other single tokens", 5.54, 5.03, 0, 1
)
