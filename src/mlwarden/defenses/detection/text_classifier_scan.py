"""Backdoor detection in a text classifier: run the per-class trigger search (and, where
asked, text STRIP) and write a `Report`.

The text-classifier half of the ``backdoor`` front door: ``mlwarden backdoor detect --model
FOLDER --data clean.jsonl`` and the ``backdoor`` audit check send a Hugging Face sequence
classifier here (a text encoder goes to `encoder_scan`, an image classifier to
`model_scan`), with the same `BackdoorSettings` (``samples``, ``seed``, ``threshold`` as a
user anomaly-index cut, ``strip``). The clean sentences need no labels: their classes are
the model's predictions.

The verdict grades the suspected class's anomaly index against the cut calibrated on clean
students (`calibration.CLASSIFIER_CUT`) with the image scan's bands (HIGH at `FAR_FACTOR` x
the cut, MEDIUM over it, LOW within `WEAK_BAND` under it); a trigger that flips fewer than
`FLIP_FLOOR` of the sentences is never more than LOW.

With ``strip`` set, `TextSTRIP` is calibrated on half of the clean sentences at its false
rejection rate and measured on the other half: the share of clean sentences it rejects, and
the share of the same sentences, of the other classes, carrying the found trigger that it
flags (when a trigger was found).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlwarden.attacks.poisoning.text import insert_everywhere
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.detection.calibration import CLASSIFIER_CUT, WEAK_BAND
from mlwarden.defenses.detection.classifier_trigger_search import (
    FLIP_FLOOR,
    ClassifierScan,
    ClassifierTriggerSearch,
)
from mlwarden.defenses.detection.encoder_scan import ATLAS, OWASP, TABLE_ROWS, grade
from mlwarden.defenses.detection.text_strip import TextSTRIP

STRIP_TEXTS = 200
"""Clean sentences STRIP is calibrated and measured on (half each)."""


def run_classifier_scan(
    model: Any,
    texts: Sequence[str],
    settings: Any,
    *,
    report: Report,
    seed: int = 0,
    subject: str = "model",
    check: str = "backdoor",
    progress: ProgressCallback = null_progress,
    search: ClassifierTriggerSearch | None = None,
) -> ClassifierScan:
    """Scan the text classifier ``model`` on clean ``texts`` (at most ``settings.samples``)
    and write the finding, metrics, tables and figure into ``report``; STRIP too if
    ``settings.strip``."""
    seed = seed if settings.seed is None else settings.seed
    search = search or ClassifierTriggerSearch(seed=seed)
    search.seed = seed
    items = list(texts)[: settings.samples]
    scan = search.scan(model, items, progress=progress)
    detected = classifier_report(
        scan, report=report, threshold=settings.threshold, subject=subject, check=check
    )
    if getattr(settings, "strip", False):
        suspect = scan.suspect
        trigger = suspect.best.text if detected and suspect.best else None
        strip_report(
            model, items, report=report, trigger=trigger, target=suspect.target, seed=seed,
            subject=subject, check=check,
        )  # fmt: skip
    return scan


def classifier_report(
    scan: ClassifierScan,
    *,
    report: Report,
    threshold: float | None = None,
    subject: str = "model",
    check: str = "backdoor",
) -> bool:
    """The graded finding (MLW-BKD-040/041/042), metrics, per-class and candidate tables
    and the figure; whether a backdoor was detected."""
    suspect = scan.suspect
    best = suspect.best
    cut = CLASSIFIER_CUT.cut if threshold is None else threshold
    severity = grade(suspect.anomaly_index, cut)
    if suspect.flip_rate < FLIP_FLOOR:
        severity = min(severity, Severity.LOW)
    detected = severity >= Severity.MEDIUM
    m = report.metrics
    m["backdoor.detected"] = int(detected)
    m["backdoor.severity"] = severity.value
    m["backdoor.anomaly_index"] = round(suspect.anomaly_index, 4)
    m["backdoor.target_class"] = suspect.name if detected else None
    m["backdoor.trigger"] = best.text if detected and best else None
    m["backdoor.flip_rate"] = round(suspect.flip_rate, 4)
    for c in scan.classes:
        m[f"backdoor.flip_rate.{c.name}"] = round(c.flip_rate, 4)
        m[f"backdoor.anomaly_index.{c.name}"] = round(c.anomaly_index, 4)
    m[f"backdoor.{scan.method}.seconds"] = round(scan.elapsed_s, 2)
    _tables_and_figure(report, scan, cut)
    if threshold is None:
        cut_text = (
            f"cut {cut:g}, calibrated on clean students ({CLASSIFIER_CUT.models} models, "
            f"{CLASSIFIER_CUT.false_positives} over it)"
        )
    else:
        cut_text = f"user threshold {cut:g}, not calibrated"
    per_class = ", ".join(
        f"{c.name} {c.flip_rate:.2f}" + ("" if c.searched else " (not searched)")
        for c in scan.classes
    )
    trigger = best.text if best else "(none)"
    stated = (
        f"The best trigger found for class '{suspect.name}' is '{trigger}': inserted into "
        f"{scan.sentences} held-apart clean sentences the model puts in other classes, it "
        f"turns {suspect.flip_rate:.0%} of them into '{suspect.name}'. Best flip rate per "
        f"target class: {per_class}. Anomaly index {suspect.anomaly_index:.1f} against the "
        f"other candidates of that class ({cut_text}; a flagged trigger must also flip at "
        f"least {FLIP_FLOOR:.0%})."
    )
    evidence = {
        "target_class": suspect.name,
        "target": suspect.target,
        "trigger": trigger,
        "token_ids": list(best.ids) if best else [],
        "flip_rate": round(suspect.flip_rate, 4),
        "anomaly_index": round(suspect.anomaly_index, 4),
        "flip_rates": {c.name: round(c.flip_rate, 4) for c in scan.classes},
        "cut": cut,
        "calibrated": threshold is None,
        "runner_up": [c.text for c in suspect.candidates[1:4]],
    }
    if detected:
        report.add(
            Finding(
                id="MLW-BKD-040",
                severity=severity,
                check=check,
                location=subject,
                title=f"Backdoor {'suspected' if severity >= Severity.HIGH else 'possible'} in "
                f"the text classifier: '{trigger}' turns sentences into '{suspect.name}'",
                detail=(
                    f"{stated} A word or phrase trigger planted by poisoning the training data "
                    "(BadNL) behaves this way. Check the training data for sentences with "
                    f"'{trigger}', and retrain or fine-prune before deploying."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    elif severity is Severity.LOW:
        report.add(
            Finding(
                id="MLW-BKD-041",
                severity=Severity.LOW,
                check=check,
                location=subject,
                title="Weak trigger anomaly in the text classifier, not conclusive",
                detail=(
                    f"{stated} The index is near the cut or the trigger flips too few "
                    f"sentences (under {1 - WEAK_BAND:.0%} of the cut, or under the floor, "
                    "clean students reach such values). Re-scan with more clean sentences if "
                    "the training data is untrusted."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    else:
        report.add(
            Finding(
                id="MLW-BKD-042",
                severity=Severity.INFO,
                check=check,
                location=subject,
                title="No word or phrase trigger found in the text classifier",
                detail=(
                    f"{stated} The search covers whole-word vocabulary tokens and phrases of up "
                    "to the searched length grown from them; it does not prove absence "
                    "(syntactic, style or sub-word triggers are not covered)."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    return detected


def _tables_and_figure(report: Report, scan: ClassifierScan, cut: float) -> None:
    report.tables.append(
        Table(
            id="backdoor-text-classes",
            title="Trigger search per target class: best trigger, flip rate, anomaly index",
            columns=[
                "target class",
                "carriers",
                "best trigger",
                "flip rate",
                "random-word flip (median)",
                "anomaly index",
                "over cut",
            ],
            rows=[
                [
                    c.name,
                    c.carriers,
                    c.best.text if c.best else c.reason,
                    round(c.flip_rate, 3),
                    _median([t.flip_rate for t in c.null]),
                    round(c.anomaly_index, 2),
                    c.anomaly_index > cut and c.flip_rate >= FLIP_FLOOR,
                ]
                for c in scan.classes
            ],
        )
    )
    suspect = scan.suspect
    report.tables.append(
        Table(
            id="backdoor-text-candidates",
            title=f"Verified trigger candidates for class '{suspect.name}'",
            columns=["rank", "trigger", "tokens", "flip rate"],
            rows=[
                [rank, c.text, c.length, round(c.flip_rate, 3)]
                for rank, c in enumerate(suspect.candidates[:TABLE_ROWS], 1)
            ],
        )
    )
    series = []
    for c in scan.classes:
        if not c.searched:
            continue
        flips = sorted((t.flip_rate for t in c.candidates), reverse=True)
        series.append(
            Series(
                label=f"searched, target '{c.name}'",
                x=list(range(1, len(flips) + 1)),
                y=[round(v, 4) for v in flips],
            )
        )
        null = sorted((t.flip_rate for t in c.null), reverse=True)
        series.append(
            Series(
                label=f"random words, target '{c.name}'",
                x=list(range(1, len(null) + 1)),
                y=[round(v, 4) for v in null],
            )
        )
    report.figures.append(
        Figure(
            id="backdoor-text-flip-rates",
            kind="line",
            title="Flip rate of verified trigger candidates per target class",
            x_label="rank",
            y_label="flip rate (share turned into the target)",
            series=series,
            caption=(
                "Each curve is sorted high to low. A backdoor shows as one candidate of one "
                "class far above the others of its class; the suspect is "
                f"'{suspect.best.text if suspect.best else '-'}' for '{suspect.name}' "
                f"({suspect.flip_rate:.0%})."
            ),
        )
    )


def _median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 3) if values else None


def strip_report(
    model: Any,
    texts: Sequence[str],
    *,
    report: Report,
    trigger: str | None,
    target: int,
    seed: int = 0,
    subject: str = "model",
    check: str = "backdoor",
) -> TextSTRIP:
    """Calibrate `TextSTRIP` on half of ``texts`` and measure its clean rejection rate on the
    other half, and its detection rate on those of the other classes carrying ``trigger``."""
    from mlwarden.core.errors import DataError

    items = [t for t in texts if t.split()][:STRIP_TEXTS]
    half = len(items) // 2
    if half < 8:
        raise DataError(f"text STRIP needs at least 16 clean sentences, got {len(items)}")
    strip = TextSTRIP(seed=seed).fit(model, items[:half])
    held = items[half:]
    frr = float(strip.predict(held).float().mean())
    m = report.metrics
    m["strip.threshold"] = round(strip.threshold_, 4)
    m["strip.frr_target"] = strip.frr
    m["strip.frr_held_out"] = round(frr, 4)
    detail = (
        f"Text STRIP ({strip.n_perturbations} '{strip.mode}' perturbations per input from "
        f"{len(strip.pool_)} pool sentences) was calibrated on {half} clean sentences at a "
        f"{strip.frr:.0%} false rejection rate (entropy threshold {strip.threshold_:.3f}); it "
        f"rejects {frr:.0%} of {len(held)} other clean sentences."
    )
    if trigger is not None:
        pred = model.predict(held).cpu()
        carriers = [t for t, p in zip(held, pred.tolist(), strict=True) if p != target]
        if carriers:
            triggered = insert_everywhere(carriers, trigger, seed=seed)
            tpr = float(strip.predict(triggered).float().mean())
            m["strip.detection_rate"] = round(tpr, 4)
            detail += (
                f" With the found trigger '{trigger}' inserted into the {len(carriers)} of them "
                f"of other classes, it flags {tpr:.0%}."
            )
    report.add(
        Finding(
            id="MLW-BKD-043",
            severity=Severity.INFO,
            check=check,
            location=subject,
            title="Text STRIP calibrated for inference-time detection of triggered inputs",
            detail=detail,
            evidence={
                "threshold": round(strip.threshold_, 4),
                "frr": strip.frr,
                "frr_held_out": round(frr, 4),
                "detection_rate": m.get("strip.detection_rate"),
                "mode": strip.mode,
                "perturbations": strip.n_perturbations,
            },
            atlas=ATLAS,
            owasp=OWASP,
        )
    )
    return strip


__all__ = ["classifier_report", "run_classifier_scan", "strip_report"]
