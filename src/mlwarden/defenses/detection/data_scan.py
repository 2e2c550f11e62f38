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
from mlwarden.defenses.detection.spectral_signatures import (
    MIN_OUTLIERS,
    Z_THRESHOLD,
    SpectralSignatures,
)

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
    """Findings listing the suspicious sample indices of each detector that found evidence.

    Activation clustering reports a class only when its small cluster passed every test
    (size, silhouette, exclusionary reclassification, trigger persistence; on tabular data
    the input outlier mass and reclassification, `ActivationClustering`); spectral
    signatures only when a class has an outlier mass, as a low finding (alone it has not
    separated poison in our measurements). Otherwise the table (and, for spectral
    signatures, an info finding) records what was measured.
    """
    report = report or Report(title="mlwarden training-data backdoor scan")
    for name, det in results.items():
        if name == "activation_clustering":
            _clustering_findings(det, class_names, report, check, subject, max_listed)
        else:
            _spectral_findings(det, class_names, report, check, subject, max_listed)
    return report


def _clustering_findings(
    det: ActivationClustering,
    class_names: Sequence[str],
    report: Report,
    check: str,
    subject: str,
    max_listed: int,
) -> None:
    idx = det.suspicious_indices()
    report.metrics["backdoor_data.activation_clustering.suspicious"] = len(idx)

    def cell(stats: dict[str, float], key: str) -> float | str:
        return round(stats[key], 3) if key in stats else "—"

    rows = [
        [
            c,
            class_names[c],
            round(s["relative_size"], 3),
            cell(s, "silhouette"),
            cell(s, "reclassification"),
            cell(s, "persistence"),
            cell(s, "persistence_main"),
            c in det.poisoned_classes_,
        ]
        for c, s in sorted(det.class_stats_.items())
    ]
    report.tables.append(
        Table(
            id="backdoor-activation-clustering",
            title="Activation clustering per class (tests run on candidate clusters only)",
            columns=[
                "class",
                "name",
                "candidate share (smaller cluster; input outlier mass if tabular)",
                "silhouette",
                "reclassified without it",
                "label kept when superimposed",
                "same, main cluster",
                "flagged",
            ],
            rows=rows,
        )
    )
    if not det.poisoned_classes_:
        return
    per_class = {
        class_names[c]: {
            "size": len(det.clusters_[c]),
            "listed": int(det.suspicious_[det.clusters_[c]].sum()),
            **{k: round(v, 4) for k, v in det.class_stats_[c].items()},
        }
        for c in det.poisoned_classes_
    }
    classes = ", ".join(class_names[c] for c in det.poisoned_classes_)
    reclass = (
        f"is reclassified to other classes by a {det.n_neighbors}-NN on the inputs fitted "
        f"without it (at least {det.reclass_threshold:.0%})"
    )
    if det.tabular_:
        title = f"Training data looks poisoned: {len(idx)} outlying samples labelled unlike "
        title += "their neighbours"
        detail = (
            f"in class {classes} an outlier mass of the robustly whitened inputs (at least "
            f"{MIN_OUTLIERS} samples beyond robust z = {Z_THRESHOLD:g}, under "
            f"{det.size_threshold:.0%} of the class) {reclass}: samples of other classes "
            "carrying a shared deviation and relabelled to this one. The samples the k-NN "
            "reclassified are listed. Inspect and remove them, then retrain."
        )
    else:
        title = f"Training data looks poisoned: {len(idx)} samples in a separate activation "
        title += "cluster"
        detail = (
            f"in class {classes} a small, separated activation cluster (under "
            f"{det.size_threshold:.0%} of the class, silhouette over "
            f"{det.silhouette_threshold:g}) {reclass} and keeps its label under "
            f"superimposition {det.persistence_margin:g} more often than the rest of its "
            "class: the signature of a trigger relabelled to the class. Inspect and remove "
            "the listed samples, then retrain."
        )
    report.add(
        Finding(
            id="MLW-BKD-010",
            severity=Severity.HIGH,
            check=check,
            location=subject,
            title=title,
            detail=detail,
            evidence={
                "classes": det.poisoned_classes_,
                "per_class": per_class,
                "indices": idx[:max_listed].tolist(),
                "count": len(idx),
            },
            atlas=["AML.T0020", "AML.T0018.000"],
            owasp=["ML02", "ML10"],
        )
    )


def _spectral_findings(
    det: SpectralSignatures,
    class_names: Sequence[str],
    report: Report,
    check: str,
    subject: str,
    max_listed: int,
) -> None:
    idx = det.outlier_indices()
    idx = idx[torch.argsort(det.z_[idx], descending=True)]  # most suspicious first
    report.metrics["backdoor_data.spectral_signatures.suspicious"] = len(idx)
    report.metrics["backdoor_data.spectral_signatures.max_z"] = round(float(det.z_.max()), 3)
    rule = f"at least {det.min_outliers} samples beyond robust z = {det.z_threshold:g}"
    if not det.outlier_classes_:
        report.add(
            Finding(
                id="MLW-BKD-012",
                severity=Severity.INFO,
                check=check,
                location=subject,
                title="Spectral signatures: no outlier mass in any class",
                detail=(
                    f"no class has {rule} along its top singular direction (largest z: "
                    f"{float(det.z_.max()):.2f}); nothing to remove."
                ),
                evidence={"max_z": round(float(det.z_.max()), 3), "rule": rule},
                atlas=["AML.T0020"],
                owasp=["ML02"],
            )
        )
        return
    report.add(
        Finding(
            id="MLW-BKD-011",
            # low: on 5%-BadNets digits the poison was not an outlier mass of its class, and
            # the masses found elsewhere were clean sub-modes (benchmarks/data_scan_eval.py)
            severity=Severity.LOW,
            check=check,
            location=subject,
            title=f"{len(idx)} training samples form a spectral-signature outlier mass",
            detail=(
                "class "
                + ", ".join(class_names[c] for c in det.outlier_classes_)
                + f" has {rule} along its top singular direction (at most "
                f"{det.removal_factor:g} x eps = {det.removal_factor * det.eps:.0%} of a class "
                "listed, most extreme first). Confirm with the activation-clustering table; "
                "remove them and retrain if they are poison."
            ),
            evidence={
                "classes": det.outlier_classes_,
                "indices": idx[:max_listed].tolist(),
                "count": len(idx),
                "rule": rule,
            },
            atlas=["AML.T0020"],
            owasp=["ML02"],
        )
    )
