"""Data-level detection: run activation clustering and/or spectral signatures and report
suspects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.defenses.detection.activation_clustering import ActivationClustering
from mlwarden.defenses.detection.spectral_signatures import SpectralSignatures

METHODS = ("activation_clustering", "spectral_signatures", "both")


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
                            "one; its samples are listed in the evidence. Inspect and remove "
                            "them, then retrain."
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
                        f"{det.removal_factor * det.eps:.0%} of each class along its top "
                        "singular direction; remove them and retrain if the poisoning bound "
                        "holds. This method always lists samples: judge it with the activation "
                        "clustering verdict."
                    ),
                    evidence={"indices": idx[:max_listed].tolist(), "count": len(idx)},
                    atlas=["AML.T0020"],
                    owasp=["ML02"],
                )
            )
    return report
