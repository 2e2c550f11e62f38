"""Hardening's front door: `HardenSettings` and `run_harden`, which ``mlwarden harden`` adapts.

The runner measures the model before and after (clean accuracy, robust accuracy under an
evasion preset, ``standard`` by default, and time spent), trains the hardened copy with
`mlwarden.defenses.training.adversarial.adversarial_train` on part of the data, and writes
one table, one plot and the findings into a `Report`. The held-out part is never trained
on, so the "after" figures are measured on data the hardened model has not seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlwarden.core.contract import Capability, note_assumptions, require
from mlwarden.core.errors import DataError
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.training.adversarial import (
    AdversarialTrainingResult,
    adversarial_train,
    check_training_data,
)
from mlwarden.defenses.training.hardening_settings import HardenSettings

if TYPE_CHECKING:
    from mlwarden.evaluation.robustness import RobustnessResult
    from mlwarden.io.dataset import Dataset

HARDEN_NEEDS = (Capability.GRADIENTS, Capability.TRAINABLE)
"""Crafting training examples backpropagates through the model; training copies its weights."""
ATLAS = ["AML.T0015", "AML.T0043"]  # Evade ML Model; Craft Adversarial Data
OWASP = ["ML01"]


@dataclass
class Measurement:
    """Clean and robust accuracy of one model, and the seconds the measurement took."""

    clean_accuracy: float
    robust_accuracy: float
    seconds: float
    certified_accuracy: float | None = None
    """Certified accuracy of the smoothed model at `HardenSettings.certify_radius`, when asked."""
    abstain_rate: float | None = None
    certify_seconds: float = 0.0


@dataclass
class HardenRun:
    """What `run_harden` did: the before/after measurements and the training result."""

    before: Measurement
    after: Measurement
    training: AdversarialTrainingResult
    train_samples: int
    test_samples: int

    @property
    def classifier(self) -> Any:
        return self.training.classifier


def measure(
    model: Any,
    data: Dataset,
    settings: HardenSettings,
    *,
    seed: int,
    progress: ProgressCallback = null_progress,
) -> tuple[Measurement, RobustnessResult]:
    """Robust accuracy of ``model`` under ``settings.preset`` at `HardenSettings.measured_eps`."""
    from mlwarden.evaluation.robustness import evaluate_robustness

    start = time.perf_counter()
    eps = settings.measured_eps()
    result = evaluate_robustness(
        model,
        data.x,
        data.y,
        eps,
        preset=settings.preset,
        norm=settings.norm,
        seed=seed,
        progress=progress,
    )
    measured = Measurement(
        result.clean_accuracy, result.robust_accuracy(eps), time.perf_counter() - start
    )
    if settings.certifies():
        from mlwarden.evaluation.certify import certify_dataset

        part = data.take(settings.certify_samples)
        cert = certify_dataset(
            model,
            part.x,
            part.y,
            sigma=settings.sigma,
            n=settings.certify_n,
            radii=[0.0, settings.certify_radius],
            seed=seed,
            progress=progress,
        )
        measured.certified_accuracy = cert.certified_accuracy(settings.certify_radius)
        measured.abstain_rate = cert.abstain_rate
        measured.certify_seconds = cert.seconds
    return measured, result


def run_harden(
    model: Any,
    data: Dataset,
    settings: HardenSettings | None = None,
    *,
    report: Report | None = None,
    seed: int = 0,
    check: str = "harden",
    progress: ProgressCallback = null_progress,
) -> HardenRun:
    """Harden ``model`` on part of ``data`` and measure it before and after on the rest.

    ``model`` is never modified; the hardened copy is `HardenRun.classifier`.
    """
    settings = settings if settings is not None else HardenSettings()
    require(model, HARDEN_NEEDS, by="hardening", hint="give a .pt2 file or weights with a factory")
    seed = seed if settings.seed is None else settings.seed
    check_training_data(model, data.x, data.y)
    if len(data) < 10:
        raise DataError(f"hardening needs at least 10 labelled samples, got {len(data)}")
    test, train = data.split(settings.test_fraction, seed=seed)
    test = test.take(settings.samples)
    report = report if report is not None else Report(title="mlwarden harden")
    note_assumptions(report, model, check)
    before, _ = measure(model, test, settings, seed=seed, progress=progress)
    trained = adversarial_train(
        model, train.x, train.y, settings.training(), seed=seed, progress=progress
    )
    after, _ = measure(trained.classifier, test, settings, seed=seed, progress=progress)
    run = HardenRun(before, after, trained, len(train), len(test))
    harden_report(run, settings, report, check=check)
    return run


def harden_report(run: HardenRun, settings: HardenSettings, report: Report, *, check: str) -> None:
    """Metrics, the before/after table and plot, the per-epoch monitor and the findings."""
    eps = settings.measured_eps()
    label = f"robust accuracy ({settings.preset}, {settings.norm} {eps:g})"
    m = report.metrics
    for name, meas in (("before", run.before), ("after", run.after)):
        m[f"harden.{name}.clean_accuracy"] = round(meas.clean_accuracy, 4)
        m[f"harden.{name}.robust_accuracy"] = round(meas.robust_accuracy, 4)
        m[f"harden.{name}.eval_seconds"] = round(meas.seconds, 2)
    m["harden.method"] = settings.method
    m["harden.eps"] = settings.eps
    m["harden.train_seconds"] = round(run.training.seconds, 2)
    m["harden.train_samples"] = run.train_samples
    m["harden.test_samples"] = run.test_samples
    m["harden.epochs_run"] = len(run.training.epochs)
    m["harden.overfit_epoch"] = run.training.overfit_epoch
    report.headline += [
        "harden.before.robust_accuracy",
        "harden.after.robust_accuracy",
        "harden.after.clean_accuracy",
        "harden.train_seconds",
    ]
    certified = settings.certifies()
    radius = settings.certify_radius
    columns = ["model", "clean accuracy", label]
    if certified:
        columns += [f"certified accuracy (L2 {radius:g}, sigma {settings.sigma:g})", "abstain"]
        for name, meas in (("before", run.before), ("after", run.after)):
            m[f"harden.{name}.certified_accuracy"] = round(meas.certified_accuracy or 0.0, 4)
            m[f"harden.{name}.certify_seconds"] = round(meas.certify_seconds, 2)
        report.headline.append("harden.after.certified_accuracy")
    rows = []
    for name, meas, trained in (
        ("before", run.before, 0.0),
        (f"after ({settings.method})", run.after, run.training.seconds),
    ):
        row: list[object] = [name, round(meas.clean_accuracy, 4), round(meas.robust_accuracy, 4)]
        if certified:
            row += [round(meas.certified_accuracy or 0.0, 4), round(meas.abstain_rate or 0.0, 4)]
        rows.append([*row, round(trained, 2), round(meas.seconds + meas.certify_seconds, 2)])
    report.tables.append(
        Table(
            id="harden-before-after",
            title=f"Before and after hardening ({settings.method})",
            columns=[*columns, "training s", "measurement s"],
            rows=rows,
        )
    )
    measures = [
        ("clean", lambda m: m.clean_accuracy),
        (f"robust, {settings.preset} {settings.norm} {eps:g}", lambda m: m.robust_accuracy),
    ]
    if certified:
        measures.append((f"certified, L2 {radius:g}", lambda m: m.certified_accuracy or 0.0))
    report.figures.append(
        Figure(
            id="harden-before-after",
            title=f"Accuracy before and after hardening ({settings.method})",
            kind="bar",
            y_label="accuracy",
            categories=[name for name, _ in measures],
            series=[
                Series(
                    label=label_,
                    x=[float(i) for i in range(len(measures))],
                    y=[float(get(meas)) for _, get in measures],
                )
                for label_, meas in (
                    ("before", run.before),
                    (f"after ({settings.method})", run.after),
                )
            ],
            caption=f"{run.test_samples} held-out samples, {settings.preset} preset, "
            f"{run.training.seconds:.1f} s of training"
            + (
                f"; {settings.certify_samples} certified at sigma {settings.sigma:g}, "
                f"n {settings.certify_n}"
                if certified
                else ""
            ),
        )
    )
    monitored = [e for e in run.training.epochs if e.pgd_accuracy is not None]
    if monitored:
        report.figures.append(
            Figure(
                id="harden-monitor",
                title="Held-apart batch accuracy per epoch (catastrophic-overfitting monitor)",
                kind="line",
                x_label="epoch",
                y_label="accuracy",
                series=[
                    Series(
                        label=f"PGD-10 at {settings.eps:g}",
                        x=[e.epoch for e in monitored],
                        y=[float(e.pgd_accuracy or 0.0) for e in monitored],
                    ),
                    Series(
                        label=f"FGSM at {settings.eps:g}",
                        x=[e.epoch for e in monitored],
                        y=[float(e.fgsm_accuracy or 0.0) for e in monitored],
                    ),
                ],
                caption=f"{run.training.monitor_samples} training samples held apart",
            )
        )
    report.add(*harden_findings(run, settings, check=check))


def harden_findings(run: HardenRun, settings: HardenSettings, *, check: str) -> list[Finding]:
    """MLW-HARD-001 catastrophic overfitting; MLW-HARD-002 no robustness gained; MLW-HARD-003
    clean accuracy lost; MLW-HARD-004 the summary (info)."""
    eps = settings.measured_eps()
    evidence = {
        "method": settings.method,
        "eps": eps,
        "preset": settings.preset,
        "before": vars(run.before),
        "after": vars(run.after),
        "train_seconds": round(run.training.seconds, 2),
        "events": list(run.training.events),
    }
    findings: list[Finding] = []
    if run.training.overfit_epoch is not None:
        findings.append(
            Finding(
                id="MLW-HARD-001",
                severity=Severity.MEDIUM,
                check=check,
                title="Catastrophic overfitting during fast adversarial training",
                detail="; ".join(run.training.events)
                + ". Single-step training masked the gradient; prefer a smaller step (alpha), "
                "pgd or trades.",
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    gain = run.after.robust_accuracy - run.before.robust_accuracy
    if settings.method != "gaussian" and gain < 0.05:
        findings.append(
            Finding(
                id="MLW-HARD-002",
                severity=Severity.MEDIUM,
                check=check,
                title="Hardening did not raise robust accuracy",
                detail=f"robust accuracy under {settings.preset} at {settings.norm} eps {eps:g} "
                f"went from {run.before.robust_accuracy:.1%} to {run.after.robust_accuracy:.1%}; "
                "train "
                "longer (--epochs), or check that eps suits the data's scale",
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    lost = run.before.clean_accuracy - run.after.clean_accuracy
    if lost > 0.05:
        findings.append(
            Finding(
                id="MLW-HARD-003",
                severity=Severity.LOW,
                check=check,
                title="Hardening cost clean accuracy",
                detail=f"clean accuracy fell from {run.before.clean_accuracy:.1%} to "
                f"{run.after.clean_accuracy:.1%}; a smaller eps, more epochs or trades with a "
                "smaller beta trade less of it",
                evidence=evidence,
                owasp=OWASP,
            )
        )
    findings.append(
        Finding(
            id="MLW-HARD-004",
            severity=Severity.INFO,
            check=check,
            title=f"Hardened with {settings.method}",
            detail=f"clean accuracy {run.before.clean_accuracy:.1%} -> "
            f"{run.after.clean_accuracy:.1%}, "
            f"robust accuracy ({settings.preset}, {settings.norm} eps {eps:g}) "
            f"{run.before.robust_accuracy:.1%} -> {run.after.robust_accuracy:.1%}, "
            f"{len(run.training.epochs)} epochs in {run.training.seconds:.1f} s on "
            f"{run.train_samples} samples",
            evidence=evidence,
            owasp=OWASP,
        )
    )
    return findings


__all__ = ["HARDEN_NEEDS", "HardenRun", "HardenSettings", "Measurement", "measure", "run_harden"]
