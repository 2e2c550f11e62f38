"""Model-level backdoor detection: run the reverse-engineering detectors and write a `Report`.

`BackdoorSettings` and `run_backdoor_scan` are the one front door of this capability:
``mlwarden backdoor detect`` adapts its flags to the settings, the ``backdoor`` audit
check is configured by them (``[checks.backdoor]``), and both call the runner. It is for
when only the model and a small clean set are at hand. Two detectors are run by
default because each sees a different trigger family: Neural Cleanse (compact
patches) and the minimum universal perturbation (faint full-image blends). A model is
flagged when either finds an anomalous class; the suspected target is the class with
the highest anomaly index among the flagged ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import AliasChoices, Field, field_validator

from mlwarden.audit.registry import CheckConfig
from mlwarden.core.contract import note_assumptions, require
from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Figure, Finding, ImageData, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
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
    threshold: float = Field(2.0, gt=0, description="anomaly index above which a class is flagged")
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
    )
    backdoor_report(scans, classifier.spec.class_names, report=report, check=check, subject=subject)
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
    threshold: float = 2.0,
    steps: int | None = None,
    batch_size: int | None = None,
    max_samples: int | None = 500,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> list[BackdoorScan]:
    """Run each detector in ``methods`` on ``classifier`` with clean ``(x, y)``.

    ``max_samples`` caps the clean set (a few hundred samples are plenty; the
    optimisation draws mini-batches from it).
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
        scans.append(make_detector(method, **params).scan(classifier, x, y, progress=progress))
    return scans


def verdict(scans: Sequence[BackdoorScan]) -> tuple[bool, int | None, float]:
    """(backdoored?, suspected target class, highest anomaly index over methods)."""
    best_idx, target = float("-inf"), None
    for scan in scans:
        for pos, cls in enumerate(scan.classes):
            idx = float(scan.anomaly_index[pos])
            if idx > scan.threshold and idx > best_idx:
                best_idx, target = idx, cls
    top = max(scan.max_anomaly_index for scan in scans)
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
) -> Report:
    """Findings, metrics, the per-class table and trigger images for ``scans``."""
    report = report or Report(title="mlwarden backdoor scan")
    detected, target, top = verdict(scans)
    report.metrics["backdoor.detected"] = int(detected)
    report.metrics["backdoor.target_class"] = target
    report.metrics["backdoor.anomaly_index"] = round(top, 4)
    for scan in scans:
        report.metrics[f"backdoor.{scan.method}.anomaly_index"] = round(scan.max_anomaly_index, 4)
        report.metrics[f"backdoor.{scan.method}.seconds"] = round(scan.elapsed_s, 2)
    columns = ["class", "name"]
    for scan in scans:
        columns += [
            f"{scan.method} {scan.size_name}",
            f"{scan.method} success",
            f"{scan.method} anomaly index",
        ]
    rows = []
    for pos, cls in enumerate(scans[0].classes):
        row: list[Any] = [cls, class_names[cls]]
        for scan in scans:
            row += [
                _round(scan.sizes[pos]),
                _round(scan.success[pos]),
                _round(scan.anomaly_index[pos]),
            ]
        rows.append(row)
    report.tables.append(
        Table(
            id="backdoor-anomaly-index",
            title="Per-class trigger size and anomaly index",
            columns=columns,
            rows=rows,
        )
    )
    for scan in scans:
        for kind, (tensor, vmin, vmax) in scan.images.items():
            flagged = set(scan.flagged)
            images = [
                _image(
                    tensor[pos],
                    f"{class_names[cls]}{'*' if cls in flagged else ''} "
                    f"{float(scan.anomaly_index[pos]):.1f}",
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
                    "anomaly-index' (* = flagged); a backdoor's target needs an anomalously small "
                    f"one ({scan.size_name}).",
                )
            )
    if detected:
        assert target is not None
        by = [s.method for s in scans if target in s.flagged]
        report.add(
            Finding(
                id="MLW-BKD-001",
                severity=Severity.HIGH,
                check=check,
                location=subject,
                title=f"Backdoor suspected: class '{class_names[target]}' has an anomalously "
                "small trigger",
                detail=(
                    f"{', '.join(by)} reverse-engineered a trigger for class {target} far smaller "
                    f"than for the other classes (anomaly index {top:.2f} > threshold "
                    f"{scans[0].threshold:g}). Inputs carrying a trigger may be forced into this "
                    "class. Do not deploy or fine-tune from this model without mitigation "
                    "(fine-pruning, unlearning) or retraining on trusted data."
                ),
                evidence={
                    "target_class": target,
                    "anomaly_index": round(top, 4),
                    "methods": by,
                    "flagged": {s.method: s.flagged for s in scans},
                },
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    else:
        report.add(
            Finding(
                id="MLW-BKD-000",
                severity=Severity.INFO,
                check=check,
                location=subject,
                title="No backdoor found by trigger reverse-engineering",
                detail=(
                    f"highest anomaly index {top:.2f} <= threshold {scans[0].threshold:g} for "
                    + ", ".join(s.method for s in scans)
                    + ". This does not prove absence: triggers "
                    "outside these families (e.g. input-dependent) are not covered."
                ),
                evidence={"anomaly_index": round(top, 4)},
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    return report
