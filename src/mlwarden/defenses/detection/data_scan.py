"""Data-level detection: run activation clustering and/or spectral signatures and report suspects.

`DataScanSettings` and `run_data_scan` are what ``mlwarden backdoor scan-data`` adapts
its flags to. There is no audit check for it: the audit data is clean evaluation data,
while this scan needs the (possibly poisoned) training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlwarden.core.contract import note_assumptions
from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.defenses.detection.activation_clustering import ActivationClustering
from mlwarden.defenses.detection.model_scan import require_detectors
from mlwarden.defenses.detection.spectral_signatures import SpectralSignatures

if TYPE_CHECKING:
    from mlwarden.io.dataset import Dataset

DATA_DETECTORS: dict[str, type[Any]] = {
    ActivationClustering.name: ActivationClustering,
    SpectralSignatures.name: SpectralSignatures,
}
METHODS = (*DATA_DETECTORS, "both")


class DataScanSettings(BaseModel):
    """Settings of the training-data scan (``mlwarden backdoor scan-data``)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("both", description=f"{', '.join(METHODS[:-1])} or both")
    eps: float = Field(
        0.1, gt=0, lt=1, description="upper bound on the poisoning rate (spectral signatures)"
    )
    layer: str | None = Field(
        None, description="layer whose activations are analysed (default: the feature layer)"
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}, got '{value}'")
        return value

    @property
    def detectors(self) -> list[type[Any]]:
        """The detector classes ``method`` selects."""
        if self.method == "both":
            return list(DATA_DETECTORS.values())
        return [DATA_DETECTORS[self.method]]


def run_data_scan(
    model: Any,
    data: Dataset,
    settings: DataScanSettings,
    *,
    report: Report,
    seed: int = 0,
    subject: str = "data",
    check: str = "backdoor-data",
) -> dict[str, Any]:
    """Check the model against the detectors' needs, scan ``data`` and write the suspects
    into ``report``; returns the fitted detectors by name."""
    classifier = require_detectors(model, settings.detectors)
    note_assumptions(report, classifier, check)
    results = scan_data(
        classifier,
        data.x,
        data.y,
        method=settings.method,
        eps=settings.eps,
        layer=settings.layer,
        seed=seed,
    )
    data_report(results, data.class_names, report=report, check=check, subject=subject)
    return results


def scan_data(
    classifier: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "both",
    eps: float = 0.1,
    layer: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fitted detectors by name."""
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    out: dict[str, Any] = {}
    if method in ("activation_clustering", "both"):
        out["activation_clustering"] = ActivationClustering(layer=layer, seed=seed).fit(
            classifier, x, y
        )
    if method in ("spectral_signatures", "both"):
        out["spectral_signatures"] = SpectralSignatures(eps=eps, layer=layer).fit(classifier, x, y)
    return out


def data_report(
    results: dict[str, Any],
    class_names: Sequence[str],
    *,
    report: Report | None = None,
    check: str = "backdoor-data",
    subject: str = "data",
    max_listed: int = 200,
) -> Report:
    """Findings listing the suspicious sample indices of each detector."""
    report = report or Report(title="mlwarden training-data backdoor scan")
    for name, det in results.items():
        idx = det.suspicious_indices()
        if hasattr(det, "scores_"):  # most suspicious first
            idx = idx[torch.argsort(det.scores_[idx], descending=True)]
        report.metrics[f"backdoor_data.{name}.suspicious"] = len(idx)
        if name == "activation_clustering":
            rows = [
                [
                    c,
                    class_names[c],
                    round(s["relative_size"], 4),
                    round(s["silhouette"], 4),
                    c in det.poisoned_classes_,
                ]
                for c, s in sorted(det.class_stats_.items())
            ]
            report.tables.append(
                Table(
                    id="backdoor-activation-clustering",
                    title="Activation clustering per class",
                    columns=["class", "name", "smaller cluster share", "silhouette", "flagged"],
                    rows=rows,
                )
            )
            if det.poisoned_classes_:
                report.add(
                    Finding(
                        id="MLW-BKD-010",
                        severity=Severity.HIGH,
                        check=check,
                        location=subject,
                        title=f"Training data looks poisoned: {len(idx)} samples in a separate "
                        "activation cluster",
                        detail=(
                            "classes "
                            + ", ".join(class_names[c] for c in det.poisoned_classes_)
                            + " split into two activation clusters with a small, well-separated "
                            "one; its samples are listed in the evidence. Inspect and remove them, "
                            "then retrain."
                        ),
                        evidence={
                            "classes": det.poisoned_classes_,
                            "indices": idx[:max_listed].tolist(),
                            "count": len(idx),
                        },
                        atlas=["AML.T0020", "AML.T0018.000"],
                        owasp=["ML02", "ML10"],
                    )
                )
        else:
            report.add(
                Finding(
                    id="MLW-BKD-011",
                    severity=Severity.MEDIUM,
                    check=check,
                    location=subject,
                    title=f"{len(idx)} training samples with the highest spectral-signature scores",
                    detail=(
                        f"the top {det.removal_factor:g} x eps = "
                        f"{det.removal_factor * det.eps:.0%} of each class along its top singular "
                        "direction; remove them and retrain if the poisoning bound holds. This "
                        "method always lists samples: judge it with the activation clustering "
                        "verdict."
                    ),
                    evidence={"indices": idx[:max_listed].tolist(), "count": len(idx)},
                    atlas=["AML.T0020"],
                    owasp=["ML02"],
                )
            )
    return report
