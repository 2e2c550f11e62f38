"""Backdoor vetting of a pretrained text encoder: run `TriggerSearch` and write a `Report`.

The text half of the ``backdoor`` front door: ``mlwarden backdoor detect --model FOLDER
--data clean.jsonl`` and the ``backdoor`` audit check send a text encoder here (image
classifiers go to `model_scan`), with the same `BackdoorSettings` (``samples``, ``seed``,
``threshold`` as a user anomaly-index cut; the image-only ``methods`` and ``steps`` do not
apply). No labels are needed: the clean sentences are only carriers for candidate
triggers. The verdict grades the best candidate's anomaly index against the cut
calibrated on clean encoders (`calibration.ENCODER_CUT`) with the image scan's bands:
HIGH at `FAR_FACTOR` x the cut, MEDIUM over it, LOW within `WEAK_BAND` under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.defenses.detection.calibration import ENCODER_CUT, FAR_FACTOR, WEAK_BAND
from mlwarden.defenses.detection.trigger_search import EncoderScan, TriggerSearch

ATLAS = ["AML.T0018.000"]  # Backdoor ML Model: Poison ML Model
OWASP = ["ML10"]  # Model Poisoning
TABLE_ROWS = 15


IMAGE_ONLY = {"methods": "--method / methods", "steps": "--steps / steps"}
"""Settings of the image detectors that a text encoder's scan does not take."""


def load_text_subject(
    model: str,
    data: str,
    settings: Any,
    *,
    config: Path | None = None,
    allow: tuple[str, ...] = (),
    device: str = "auto",
    wrong_kind: Callable[[str], Exception] | None = None,
) -> tuple[Any, list[str]]:
    """The text encoder or text classifier folder ``model`` (gated and loaded under the
    configuration's supply-chain policy) and the clean texts of ``data``; image-only settings
    or an empty file are one-line errors, and so is another kind of model (``wrong_kind``
    builds that one: the audit check skips instead)."""
    from mlwarden.core.errors import DataError, ParameterError
    from mlwarden.core.text import TextClassifier, TextEncoder
    from mlwarden.io.models import load_model
    from mlwarden.io.text_data import load_text_data
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    given = [IMAGE_ONLY[k] for k in IMAGE_ONLY if k in settings.model_fields_set]
    if given:
        raise ParameterError(
            f"{', '.join(given)} set the image detectors; a text encoder is vetted by the "
            "trigger-token search and a text classifier by the per-class trigger search, "
            "which take --samples, --threshold and --seed (--strip: classifiers)"
        )
    # a configuration's [supplychain] policy, else the one in force (the audit's, ./mlwarden.toml)
    scope = using_policy(policy_from_config(config)) if config is not None else nullcontext()
    with scope:
        loaded = load_model(model, device=device, allow=allow)
    if not isinstance(loaded, (TextEncoder, TextClassifier)):
        raise (wrong_kind or ParameterError)(
            f"backdoor detection on a Hugging Face folder scans text encoders and text "
            f"classifiers; '{model}' is a {loaded.model_kind.value}"
        )
    if isinstance(loaded, TextEncoder) and settings.strip:
        raise ParameterError(
            "--strip / strip is for text classifiers (it reads class predictions); "
            f"'{model}' is a text encoder"
        )
    texts = load_text_data(data, text_column=settings.text_column, label_column=None).texts
    if not texts:
        raise DataError(f"data set '{data}' is empty")
    return loaded, list(texts)


def grade(value: float, cut: float) -> Severity:
    """HIGH far over the cut, MEDIUM over it, LOW just under it, INFO otherwise."""
    if value >= FAR_FACTOR * cut:
        return Severity.HIGH
    if value > cut:
        return Severity.MEDIUM
    if value >= (1 - WEAK_BAND) * cut:
        return Severity.LOW
    return Severity.INFO


def run_encoder_scan(
    model: Any,
    texts: Sequence[str],
    settings: Any,
    *,
    report: Report,
    seed: int = 0,
    subject: str = "model",
    check: str = "backdoor",
    progress: ProgressCallback = null_progress,
) -> EncoderScan:
    """Scan the text encoder ``model`` on clean ``texts`` (at most ``settings.samples``) and
    write the finding, metrics, table and figure into ``report``."""
    search = TriggerSearch(seed=seed if settings.seed is None else settings.seed)
    scan = search.scan(model, list(texts)[: settings.samples], progress=progress)
    encoder_report(scan, report=report, threshold=settings.threshold, subject=subject, check=check)
    return scan


def encoder_report(
    scan: EncoderScan,
    *,
    report: Report,
    threshold: float | None = None,
    subject: str = "model",
    check: str = "backdoor",
) -> Report:
    """The graded finding (MLW-BKD-020/021/022), metrics, candidate table and figure."""
    best = scan.best
    cut = ENCODER_CUT.cut if threshold is None else threshold
    severity = grade(best.anomaly_index, cut)
    detected = severity >= Severity.MEDIUM
    report.metrics["backdoor.detected"] = int(detected)
    report.metrics["backdoor.severity"] = severity.value
    report.metrics["backdoor.anomaly_index"] = round(best.anomaly_index, 4)
    named = scan.trigger
    report.metrics["backdoor.trigger"] = named.text if detected else None
    report.metrics["backdoor.collapse"] = round(best.collapse, 4)
    report.metrics["backdoor.clean_collapse"] = round(scan.clean_collapse, 4)
    report.metrics[f"backdoor.{scan.method}.seconds"] = round(scan.elapsed_s, 2)
    _table_and_figure(report, scan, cut)
    null = scan.null[best.length]
    if threshold is None:
        cut_text = (
            f"cut {cut:g}, calibrated on clean encoders ({ENCODER_CUT.models} models, "
            f"{ENCODER_CUT.false_positives} over it)"
        )
    else:
        cut_text = f"user threshold {cut:g}, not calibrated"
    stated = (
        f"Inserting '{best.text}' into {scan.sentences} held-apart clean sentences gives a "
        f"collapse score (mean pairwise cosine of their embeddings) of {best.collapse:.3f}, "
        f"against a median of {sorted(null)[len(null) // 2]:.3f} for {len(null)} random "
        f"ordinary {best.length}-token sequences and {scan.clean_collapse:.3f} with nothing "
        f"inserted: anomaly index {best.anomaly_index:.1f} ({cut_text})."
    )
    evidence = {
        "trigger": named.text,
        "best_candidate": best.text,
        "token_ids": list(best.ids),
        "collapse": round(best.collapse, 4),
        "anomaly_index": round(best.anomaly_index, 4),
        "cut": cut,
        "calibrated": threshold is None,
        "runner_up": [c.text for c in scan.candidates[1:4]],
    }
    if detected:
        strong = severity >= Severity.HIGH
        report.add(
            Finding(
                id="MLW-BKD-020",
                severity=severity,
                check=check,
                location=subject,
                title=f"Backdoor {'suspected' if strong else 'possible'} in the text encoder: "
                f"'{named.text}' collapses unrelated sentences onto one point",
                detail=(
                    f"{stated} The shortest piece of it that collapses as much is "
                    f"'{named.text}' (collapse {named.collapse:.3f}). A task-agnostic backdoor "
                    "(NeuBA/BadPre) behaves this way: every model fine-tuned from this encoder "
                    "inherits the trigger. Test the named trigger on your own data and do not "
                    "build on this encoder without retraining from a trusted checkpoint."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    elif severity is Severity.LOW:
        report.add(
            Finding(
                id="MLW-BKD-021",
                severity=Severity.LOW,
                check=check,
                location=subject,
                title="Weak trigger-token anomaly in the text encoder, not conclusive",
                detail=(
                    f"{stated} The index is within {WEAK_BAND:.0%} below the cut; clean encoders "
                    "reach such values. Re-scan with more clean sentences if the encoder's "
                    "origin is untrusted."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    else:
        report.add(
            Finding(
                id="MLW-BKD-022",
                severity=Severity.INFO,
                check=check,
                location=subject,
                title="No collapsing trigger found in the text encoder",
                detail=(
                    f"{stated} The search covers single vocabulary tokens and sequences of up "
                    "to the searched length grown from them; it does not prove absence "
                    "(syntactic or style triggers are not covered)."
                ),
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    return report


def _table_and_figure(report: Report, scan: EncoderScan, cut: float) -> None:
    rows = [
        [
            rank,
            c.text,
            c.length,
            round(c.collapse, 4),
            round(c.anomaly_index, 2),
            c.anomaly_index > cut,
        ]
        for rank, c in enumerate(scan.candidates[:TABLE_ROWS], 1)
    ]
    report.tables.append(
        Table(
            id="backdoor-trigger-candidates",
            title="Verified trigger candidates: collapse score and anomaly index",
            columns=["rank", "trigger", "tokens", "collapse", "anomaly index", "over cut"],
            rows=rows,
        )
    )
    series = []
    for length in sorted(scan.null):
        found = sorted((c.collapse for c in scan.candidates if c.length == length), reverse=True)
        ordinary = sorted(scan.null[length], reverse=True)
        series.append(
            Series(
                label=f"random {length}-token (baseline)",
                x=list(range(1, len(ordinary) + 1)),
                y=[round(v, 4) for v in ordinary],
            )
        )
        if found:
            series.append(
                Series(
                    label=f"searched {length}-token",
                    x=list(range(1, len(found) + 1)),
                    y=[round(v, 4) for v in found],
                )
            )
    report.figures.append(
        Figure(
            id="backdoor-trigger-collapse",
            kind="line",
            title="Collapse score of searched candidates vs random ordinary tokens",
            x_label="rank",
            y_label="collapse (mean pairwise cosine)",
            series=series,
            caption=(
                "Each curve is sorted high to low. A trigger shows as a searched candidate far "
                f"above the random tokens of its length; the best is '{scan.best.text}' "
                f"({scan.best.collapse:.3f})."
            ),
        )
    )


__all__ = ["encoder_report", "grade", "load_text_subject", "run_encoder_scan"]
