"""Model-level backdoor detection: run the reverse-engineering detectors and write a `Report`.

`BackdoorSettings` and `run_backdoor_scan` are the one front door of this capability:
``mlwarden backdoor detect`` adapts its flags to the settings, the ``backdoor`` audit
check is configured by them (``[checks.backdoor]``), and both call the runner. It is for
when only the model and a small clean set are at hand. Two detectors are run by
default because each sees a different trigger family: Neural Cleanse (compact
patches) and the minimum universal perturbation (faint full-image blends). Each
detector's statistic is judged against a cut calibrated on clean models
(`calibration`), and the severity is graded: HIGH when both detectors point at the
same class (or one is far over its cut), MEDIUM when only one does, LOW for a weak
anomaly just under a cut. A detector that fails or does not converge makes the scan
inconclusive (MEDIUM), never clean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import AliasChoices, Field, field_validator

from mlwarden.audit.registry import CheckConfig
from mlwarden.core.contract import note_assumptions, require
from mlwarden.core.errors import MlwardenError, ParameterError
from mlwarden.core.findings import Figure, Finding, ImageData, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.detection.calibration import (
    CUTS,
    JOINT,
    WEAK_BAND,
    Assessment,
    assess,
)
from mlwarden.defenses.detection.neural_cleanse import NeuralCleanse
from mlwarden.defenses.detection.result import BackdoorScan
from mlwarden.defenses.detection.universal_perturbation import UniversalPerturbation

DETECTORS: dict[str, type[Any]] = {
    NeuralCleanse.name: NeuralCleanse,
    UniversalPerturbation.name: UniversalPerturbation,
}
DEFAULT_METHODS = (NeuralCleanse.name, UniversalPerturbation.name)
ATLAS = ["AML.T0018.000"]  # Backdoor ML Model: Poison ML Model
OWASP = ["ML10"]  # Model Poisoning

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.io.dataset import Dataset


class BackdoorSettings(CheckConfig):
    """Settings of the model-level scan: ``[checks.backdoor]`` and ``mlwarden backdoor detect``."""

    methods: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METHODS), min_length=1, description="detectors to run"
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="MAD anomaly index above which a class is flagged (default: the cuts "
        "calibrated on clean models)",
    )
    steps: int | None = Field(
        None, ge=1, description="optimisation steps per method (default: the detector's)"
    )
    samples: int = Field(
        500,
        ge=2,
        validation_alias=AliasChoices("samples", "max_samples"),  # max_samples: older files
        description="use at most this many clean samples",
    )
    seed: int | None = Field(None, description="default: the audit seed (--seed on the command)")
    text_column: str = Field(
        "text", min_length=1, description="column of the clean texts, for a text model"
    )
    strip: bool = Field(
        False,
        description="text classifiers: also calibrate text STRIP on the clean data and measure "
        "it on inputs carrying the trigger found",
    )

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in DETECTORS]
        if unknown:
            raise ValueError(
                f"unknown detection method '{unknown[0]}'; choose from {', '.join(DETECTORS)}"
            )
        return value


def require_detectors(model: Any, detectors: Iterable[Any]) -> Classifier:
    """``model`` if it offers what every detector declares in ``requirements``, else the
    contract's `ParameterError` naming the first detector it cannot serve."""
    for detector in detectors:
        require(model, detector.requirements, by=detector.title)
    return model  # type: ignore[no-any-return]


def run_backdoor_scan(
    model: Any,
    data: Dataset,
    settings: BackdoorSettings,
    *,
    report: Report,
    seed: int = 0,
    subject: str = "model",
    check: str = "backdoor",
    progress: ProgressCallback = null_progress,
) -> list[BackdoorScan]:
    """Check the model against the detectors' needs, scan it with ``settings`` on the clean
    ``data`` and write the findings, metrics, table and figures into ``report``.

    ``seed`` is the caller's (``--seed``, the audit's) unless ``settings.seed`` is set.
    """
    classifier = require_detectors(model, (DETECTORS[m] for m in settings.methods))
    note_assumptions(report, classifier, check)
    failures: dict[str, str] = {}
    scans = scan_model(
        classifier,
        data.x,
        data.y,
        methods=settings.methods,
        threshold=settings.threshold,
        steps=settings.steps,
        max_samples=settings.samples,
        seed=seed if settings.seed is None else settings.seed,
        progress=progress,
        failures=failures,
    )
    backdoor_report(
        scans,
        classifier.spec.class_names,
        report=report,
        check=check,
        subject=subject,
        failures=failures,
    )
    return scans


def make_detector(method: str, **params: Any) -> Any:
    """A detector by name with its hyper-parameters (unknown names and parameters are errors)."""
    if method not in DETECTORS:
        raise ParameterError(
            f"unknown detection method '{method}'; choose from {', '.join(DETECTORS)}"
        )
    try:
        return DETECTORS[method](**params)
    except TypeError as exc:
        raise ParameterError(f"bad parameter for method '{method}': {exc}") from None


def scan_model(
    classifier: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    threshold: float | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    max_samples: int | None = 500,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
    failures: dict[str, str] | None = None,
) -> list[BackdoorScan]:
    """Run each detector in ``methods`` on ``classifier`` with clean ``(x, y)``.

    ``max_samples`` caps the clean set (a few hundred samples are plenty; the
    optimisation draws mini-batches from it). ``threshold`` ``None`` uses the calibrated
    cuts. With a ``failures`` dict, a detector that breaks down on a valid input (a
    numerical error in the optimisation) is recorded there by name instead of raised,
    so the other detector still runs and the report can say the scan is inconclusive;
    bad input (`MlwardenError`) is always raised.
    """
    if not methods:
        raise ParameterError("methods must name at least one detector")
    if max_samples is not None and len(x) > max_samples:
        x, y = x[:max_samples], y[:max_samples]
    scans = []
    for method in methods:
        params: dict[str, Any] = {"threshold": threshold, "seed": seed}
        if steps is not None:
            params["steps"] = steps
        if batch_size is not None:
            params["batch_size"] = batch_size
        detector = make_detector(method, **params)
        if failures is None:
            scans.append(detector.scan(classifier, x, y, progress=progress))
            continue
        try:
            scans.append(detector.scan(classifier, x, y, progress=progress))
        except MlwardenError:
            raise
        except (RuntimeError, ValueError, ArithmeticError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            failures[method] = f"{type(exc).__name__}: {first}"
    return scans


def verdict(scans: Sequence[BackdoorScan]) -> tuple[bool, int | None, float]:
    """(backdoored?, suspected target class, highest anomaly index over methods).

    Backdoored means the graded assessment (`calibration.assess`) is MEDIUM or above.
    """
    assessment = assess(scans)
    top = max(scan.max_anomaly_index for scan in scans)
    target = assessment.target if assessment.detected else None
    return target is not None, target, top


def _image(t: torch.Tensor, label: str, vmin: float, vmax: float) -> ImageData:
    return ImageData(
        label=label,
        pixels=[[_round(v) for v in row] for row in t.tolist()]
        if t.dim() == 2
        else [[[_round(c) for c in px] for px in row] for row in t.tolist()],
        vmin=vmin,
        vmax=vmax,
    )


def _round(v: float) -> float:
    return round(float(v), 4)


def backdoor_report(
    scans: Sequence[BackdoorScan],
    class_names: Sequence[str],
    *,
    report: Report | None = None,
    check: str = "backdoor",
    subject: str = "model",
    failures: dict[str, str] | None = None,
) -> Report:
    """Findings, metrics, the per-class table and trigger images for ``scans``.

    ``failures`` names detectors that broke down (`scan_model`); they make the scan
    inconclusive (MEDIUM MLW-BKD-003) unless another detector found the backdoor.
    """
    report = report or Report(title="mlwarden backdoor scan")
    failures = dict(failures or {})
    if not scans:
        _inconclusive(report, failures, [], check, subject)
        return report
    assessment = assess(scans)
    detected = assessment.detected and assessment.target is not None
    top = max(scan.max_anomaly_index for scan in scans)
    report.metrics["backdoor.detected"] = int(detected)
    report.metrics["backdoor.target_class"] = assessment.target if detected else None
    report.metrics["backdoor.severity"] = assessment.severity.value
    report.metrics["backdoor.anomaly_index"] = round(top, 4)
    for scan in scans:
        report.metrics[f"backdoor.{scan.method}.anomaly_index"] = round(scan.max_anomaly_index, 4)
        report.metrics[f"backdoor.{scan.method}.size_ratio"] = round(scan.size_ratio, 4)
        report.metrics[f"backdoor.{scan.method}.seconds"] = round(scan.elapsed_s, 2)
    joint = next((e for e in assessment.evidence if e.statistic == JOINT), None)
    if joint is not None:
        report.metrics["backdoor.joint_ratio"] = round(joint.value, 4)
    _tables_and_figures(report, scans, class_names)
    evidence = {
        "statistics": {e.statistic: e.as_dict() for e in assessment.evidence},
        "flagged": {s.method: s.flagged for s in scans},
    }
    unconverged = assessment.unconverged + sorted(failures)
    if failures:
        evidence["failed"] = failures
    if unconverged:
        evidence["not_converged"] = unconverged
    stated = _statistics_sentence(assessment)
    if detected:
        target = assessment.target
        assert target is not None
        strong = assessment.severity >= Severity.HIGH
        report.add(
            Finding(
                id="MLW-BKD-001",
                severity=assessment.severity,
                check=check,
                location=subject,
                title=f"Backdoor {'suspected' if strong else 'possible'}: class "
                f"'{class_names[target]}' has an anomalously small trigger",
                detail=(
                    f"{assessment.reason[0].upper()}{assessment.reason[1:]}. {stated} Inputs "
                    "carrying a trigger may be forced into this class. "
                    + (
                        "Do not deploy or fine-tune from this model without mitigation "
                        "(fine-pruning, unlearning) or retraining on trusted data."
                        if strong
                        else "One detector alone is not conclusive: test the reverse-engineered "
                        "trigger (the report's images) on held-out data, or scan the training "
                        "data (mlwarden backdoor scan-data), before trusting this model."
                    )
                ),
                evidence={"target_class": target, "anomaly_index": round(top, 4), **evidence},
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
        return report
    if unconverged or assessment.severity >= Severity.MEDIUM:
        _inconclusive(report, failures, assessment.unconverged, check, subject, evidence, stated)
        return report
    if assessment.severity is Severity.LOW:
        report.add(
            Finding(
                id="MLW-BKD-002",
                severity=Severity.LOW,
                check=check,
                location=subject,
                title="Weak backdoor anomaly, not conclusive",
                detail=(
                    f"{assessment.reason[0].upper()}{assessment.reason[1:]}, and no statistic "
                    f"is over its cut. {stated} Clean models reach such values too; re-scan "
                    "with more clean samples or steps if the model's origin is untrusted."
                ),
                evidence={"target_class": assessment.target, **evidence},
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
        return report
    report.add(
        Finding(
            id="MLW-BKD-000",
            severity=Severity.INFO,
            check=check,
            location=subject,
            title="No backdoor found by trigger reverse-engineering",
            detail=(
                f"Every statistic is more than {WEAK_BAND:.0%} below its cut. {stated} This "
                "does not prove absence: triggers outside these families (e.g. input-dependent) "
                "are not covered."
            ),
            evidence={"anomaly_index": round(top, 4), **evidence},
            atlas=ATLAS,
            owasp=OWASP,
        )
    )
    return report


def _statistics_sentence(assessment: Assessment) -> str:
    """Each statistic with its cut and, when calibrated, the measured false-positive rate."""
    parts = []
    for e in assessment.evidence:
        if e.calibrated:
            cut = CUTS[e.statistic]
            parts.append(
                f"{e.statistic.replace('_', ' ')} {cut.statistic} {e.value:.2f} (class {e.target}; "
                f"cut {e.cut:g}, {cut.false_positives}/{cut.models} clean calibration models "
                "over it)"
            )
        else:
            parts.append(
                f"{e.statistic.replace('_', ' ')} anomaly index {e.value:.2f} (class {e.target}; "
                f"user threshold {e.cut:g}, not calibrated)"
            )
    return "Statistics: " + "; ".join(parts) + "."


def _inconclusive(
    report: Report,
    failures: dict[str, str],
    unconverged: list[str],
    check: str,
    subject: str,
    evidence: dict[str, Any] | None = None,
    stated: str = "",
) -> None:
    """The scan cannot clear the model: a detector failed or did not converge."""
    why = [f"{m} failed ({msg})" for m, msg in failures.items()]
    why += [
        f"{m} did not converge (some class's trigger never reached the success rate, or a "
        "size is not finite)"
        for m in unconverged
    ]
    report.metrics["backdoor.detected"] = 0
    report.metrics.setdefault("backdoor.target_class", None)
    report.metrics["backdoor.severity"] = Severity.MEDIUM.value
    report.add(
        Finding(
            id="MLW-BKD-003",
            severity=Severity.MEDIUM,
            check=check,
            location=subject,
            title="Backdoor scan inconclusive: a detector did not complete",
            detail=(
                f"{'; '.join(why)}. The model is not cleared. {stated} Re-run with more steps "
                "(--steps) or clean samples (--samples)."
            ).replace(".  ", ". "),
            evidence={**(evidence or {}), "failed": failures, "not_converged": unconverged},
            atlas=ATLAS,
            owasp=OWASP,
        )
    )


def _tables_and_figures(
    report: Report, scans: Sequence[BackdoorScan], class_names: Sequence[str]
) -> None:
    """The per-class table (size, success, ratio, anomaly index) and the trigger images."""
    from mlwarden.defenses.detection.calibration import size_ratios

    columns = ["class", "name"]
    for scan in scans:
        columns += [
            f"{scan.method} {scan.size_name}",
            f"{scan.method} success",
            f"{scan.method} size ratio",
            f"{scan.method} anomaly index",
        ]
    ratios = [size_ratios(scan.sizes) for scan in scans]
    rows = []
    for pos, cls in enumerate(scans[0].classes):
        row: list[Any] = [cls, class_names[cls]]
        for scan, ratio in zip(scans, ratios, strict=True):
            row += [
                _round(scan.sizes[pos]),
                _round(scan.success[pos]),
                _round(ratio[pos]),
                _round(scan.anomaly_index[pos]),
            ]
        rows.append(row)
    report.tables.append(
        Table(
            id="backdoor-anomaly-index",
            title="Per-class trigger size, size ratio (median / size) and anomaly index",
            columns=columns,
            rows=rows,
        )
    )
    for scan, ratio in zip(scans, ratios, strict=True):
        flagged = set(scan.flagged)
        for kind, (tensor, vmin, vmax) in scan.images.items():
            images = [
                _image(
                    tensor[pos],
                    f"{class_names[cls]}{'*' if cls in flagged else ''} {float(ratio[pos]):.1f}",
                    vmin,
                    vmax,
                )
                for pos, cls in enumerate(scan.classes)
            ]
            report.figures.append(
                Figure(
                    id=f"backdoor-{scan.method}-{kind}",
                    kind="images",
                    title=f"{scan.method.replace('_', ' ').title()}: reverse-engineered {kind} "
                    "per class",
                    images=images,
                    caption=f"The {kind} that sends clean inputs to each class, labelled 'class "
                    "size-ratio' (median / this class's size; * = flagged); a backdoor's target "
                    f"needs an anomalously small one ({scan.size_name}).",
                )
            )
