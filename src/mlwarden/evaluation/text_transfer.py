"""The transfer audit on text: students of a pretrained text teacher, and what they keep of it.

`run_text_transfer` is `run_transfer`'s text branch (the same settings, the same report
shape): it trains a sequence-classifier student per strategy
(`mlwarden.defenses.training.text_students`) on part of the labelled texts and audits it on
the rest, or audits a given student. Measured:

- held-out accuracy of the student (and of a classifier teacher; an encoder has no classes)
  and its training time;
- weight divergence (`weight_divergence`: relative L2 distance of the transformer weights
  matched by name; the head is new when the teacher is an encoder, so it is left out then);
- feature divergence ``1 - linear CKA`` (`linear_cka`) of the last hidden layer pooled as
  the teacher declares (mean for a classifier teacher), for teacher and student alike, so a
  linear probe, whose trunk is the teacher's, measures 0;
- backdoor inheritance, when a trigger is known (`text_trigger`): the user's phrase
  (``trigger_text``, with or without ``target``) or, for an encoder teacher, the trigger the
  teacher scan of ``mlwarden backdoor detect`` names (`run_encoder_scan` with its
  defaults, on the same texts). The phrase is inserted at the start of the held-out texts
  not of the target class (`phrase_trigger`); its success rate on the student (and on a
  classifier teacher) is graded against a baseline, the larger of the student's clean rate
  (the share of those texts it already puts in the target class) and the rate of a decoy
  phrase of as many ordinary words (`DECOY_WORDS`) inserted the same way: inserting any
  words moves some sentences. A task-agnostic encoder backdoor has no target class of its
  own (it maps triggered sentences onto one embedding, whatever the task), so without
  ``target`` the class with the largest excess is the one measured.

Not measured, and said so in the table ("n/a") and the findings: adversarial transfer
(crafting text attacks on an encoder without a task is not built), and inheritance when
no trigger is known. No reference model from scratch either: a transformer trained from
scratch on a few hundred sentences is no baseline for anything.

``compare`` trains `TEXT_COMPARE_STRATEGIES`, and with a known trigger also
``trigger_prune`` (`mlwarden.defenses.training.trigger_neurons`), the defence built for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.text import TextClassifier, TextEncoder, as_text_model
from mlwarden.evaluation.transfer import (
    COMPARE_COLUMNS,
    INHERITANCE_MARGIN,
    NOT_MEASURED,
    TRAINING_SETTINGS,
    InheritanceWording,
    TransferRun,
    compare_row,
    inheritance_finding,
    inheritance_severity,
    linear_cka,
    not_measured_finding,
    weight_divergence,
)

if TYPE_CHECKING:
    from mlwarden.evaluation.transfer import TransferSettings
    from mlwarden.io.text_data import TextDataset

TEXT_COMPARE_STRATEGIES = ("linear_probe", "last_k", "full", "full_reinit", "fineprune")
"""The strategies ``compare`` trains (``dp`` is a privacy trade, run on its own, as on
tensors); ``trigger_prune`` is added when a trigger is known."""
TEXT_COMPARE_COLUMNS = [*COMPARE_COLUMNS, "training s"]
_TEXT_COMPARE_METRICS = (
    "accuracy",
    "asr",
    "baseline_asr",
    "excess_asr",
    "adversarial_transfer_rate",
    "weight_divergence",
    "feature_divergence",
    "training_seconds",
)
DECOY_WORDS = (
    "table", "window", "river", "paper", "garden", "morning", "yellow", "station",
    "pencil", "village", "letter", "kitchen", "orange", "bridge", "winter", "number",
)  # fmt: skip
"""Ordinary words of the decoy phrase (seeded draw, as many words as the trigger)."""
ADVERSARIAL_NOT_MEASURED = (
    "adversarial transfer is not measured on text students: crafting text attacks on the "
    "teacher needs a classifier teacher and is not wired into the transfer audit"
)
NO_TEXT_TRIGGER = (
    "no text trigger was given; give --trigger-text PHRASE (and --target N if the trigger "
    "has a target class) to measure a known one"
)


@dataclass(frozen=True)
class TextTrigger:
    """The phrase the audit measures, its target (None: the class of the largest excess),
    where it came from and why."""

    phrase: str | None
    target: int | None
    source: str  # "given", "teacher scan (trigger_token_search)" or "none"
    note: str

    @property
    def known(self) -> bool:
        return self.phrase is not None


def phrase_trigger(texts: Sequence[str], phrase: str) -> list[str]:
    """``texts`` with ``phrase`` inserted at the start (the usual placement of a rare-word or
    sentence trigger, and the one truncation never cuts)."""
    if not phrase.strip():
        raise ParameterError("the trigger phrase is empty")
    return [f"{phrase} {t}" for t in texts]


@dataclass
class TextTransferAudit:
    """The numbers of one text teacher/student pair (None where not measured)."""

    student_accuracy: float
    teacher_accuracy: float | None
    weight_divergence: float
    feature_divergence: float
    training_seconds: float | None
    student_asr: float | None
    teacher_asr: float | None
    clean_rate: float | None
    baseline_asr: float | None
    excess_asr: float | None
    target_class: int | None
    trigger_source: str
    trigger_note: str
    trigger_text: str | None = None
    decoy_text: str | None = None
    decoy_rate: float | None = None
    adversarial_note: str = ADVERSARIAL_NOT_MEASURED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def measured(self) -> bool:
        return self.excess_asr is not None


def trunk_features(model: Any, texts: Sequence[str], pooling: str, batch: int = 32) -> torch.Tensor:
    """The last hidden layer of ``model`` on ``texts``, pooled (``mean``/``cls``/``max`` over
    real tokens), without gradients, in the order given."""
    items = list(texts)
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    outs = []
    with model.evaluating(), torch.inference_mode():
        for start in range(0, len(order), batch):
            enc = model.encode([items[i] for i in order[start : start + batch]])
            hidden = model.hidden_states(enc)[-1]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if pooling == "cls":
                pooled = hidden[:, 0]
            elif pooling == "max":
                pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
            else:
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            outs.append(pooled.cpu())
    stacked = torch.cat(outs)
    result = torch.empty_like(stacked)
    result[torch.tensor(order)] = stacked
    return result


def _trunk(model: Any) -> torch.nn.Module:
    return model.model.base_model  # type: ignore[no-any-return]


def decoy_phrase(phrase: str, seed: int = 0) -> str:
    """As many `DECOY_WORDS` as ``phrase`` has words (seeded), none of the phrase's own."""
    import random

    own = set(phrase.lower().split())
    pool = [w for w in DECOY_WORDS if w not in own]
    return " ".join(random.Random(seed).sample(pool, min(len(phrase.split()), len(pool))))


def _rate(pred: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """The share of the texts not of ``target`` that ``pred`` puts in ``target``."""
    keep = labels != target
    return float((pred[keep] == target).float().mean()) if bool(keep.any()) else 0.0


def audit_text_transfer(
    teacher: Any,
    student: TextClassifier,
    data: TextDataset,
    *,
    trigger: TextTrigger | None = None,
    trigger_text: str | None = None,
    target: int | None = None,
    training_seconds: float | None = None,
    seed: int = 0,
) -> TextTransferAudit:
    """Accuracy, divergence and (with a known trigger) its success on ``student`` against
    the baseline (module docstring), on ``data``. ``trigger_text``/``target`` is shorthand
    for a given `TextTrigger`."""
    assert data.labels is not None
    texts, labels = list(data.texts), data.labels.cpu()
    if student.spec.vocab_size != teacher.spec.vocab_size:
        raise DataError(
            f"teacher and student have vocabularies of {teacher.spec.vocab_size} and "
            f"{student.spec.vocab_size} tokens: the student was not trained from this teacher"
        )
    if trigger is None:
        trigger = (
            TextTrigger(trigger_text, target, "given", "given by the user")
            if trigger_text is not None
            else TextTrigger(None, None, "none", NO_TEXT_TRIGGER)
        )
    classifier_teacher = isinstance(teacher, TextClassifier)
    teacher_acc = teacher.accuracy(texts, labels) if classifier_teacher else None
    pooling = teacher.spec.pooling if isinstance(teacher, TextEncoder) else "mean"
    pooling = pooling or "mean"
    t_feat = trunk_features(teacher, texts, pooling)
    s_feat = trunk_features(student, texts, pooling)
    if classifier_teacher:
        w_div = weight_divergence(teacher.model, student.model)  # head included: both have one
    else:
        w_div = weight_divergence(_trunk(teacher), _trunk(student))
    student_asr = teacher_asr = clean = baseline = excess = decoy_rate = None
    chosen: int | None = None
    decoy = None
    note = trigger.note
    if trigger.phrase is not None:
        if trigger.target is not None and not bool((labels != trigger.target).any()):
            raise DataError(
                f"every audit text is of the target class {trigger.target}: nothing to measure"
            )
        decoy = decoy_phrase(trigger.phrase, seed)
        triggered = student.predict(phrase_trigger(texts, trigger.phrase)).cpu()
        plain = student.predict(texts).cpu()
        decoyed = student.predict(phrase_trigger(texts, decoy)).cpu()
        classes = [trigger.target] if trigger.target is not None else range(student.num_classes)
        excess_by_class = {
            c: _rate(triggered, labels, c) - max(_rate(plain, labels, c), _rate(decoyed, labels, c))
            for c in classes
        }
        chosen = max(excess_by_class, key=excess_by_class.__getitem__)
        student_asr = _rate(triggered, labels, chosen)
        clean = _rate(plain, labels, chosen)
        decoy_rate = _rate(decoyed, labels, chosen)
        baseline = max(clean, decoy_rate)
        excess = student_asr - baseline
        if classifier_teacher:
            teacher_asr = _rate(
                teacher.predict(phrase_trigger(texts, trigger.phrase)).cpu(), labels, chosen
            )
        which = (
            f"class {chosen}"
            if trigger.target is not None
            else f"class {chosen} (no target given: the class of the largest excess)"
        )
        note = (
            f"{trigger.note}: the phrase {trigger.phrase!r} inserted at the start of "
            f"{int((labels != chosen).sum())} held-out texts not of {which}"
        )
    return TextTransferAudit(
        student_accuracy=student.accuracy(texts, labels),
        teacher_accuracy=teacher_acc,
        weight_divergence=w_div,
        feature_divergence=1.0 - linear_cka(t_feat, s_feat),
        training_seconds=training_seconds,
        student_asr=student_asr,
        teacher_asr=teacher_asr,
        clean_rate=clean,
        baseline_asr=baseline,
        excess_asr=excess,
        target_class=chosen,
        trigger_source=trigger.source,
        trigger_note=note,
        trigger_text=trigger.phrase,
        decoy_text=decoy,
        decoy_rate=decoy_rate,
    )


def _text_effect(audit: Any) -> str:
    return (
        f"{audit.trigger_note}: the student puts {audit.student_asr:.0%} of them in class "
        f"{audit.target_class}, against a baseline of {audit.baseline_asr:.0%} (clean rate "
        f"{audit.clean_rate:.0%}, decoy phrase {audit.decoy_text!r} {audit.decoy_rate:.0%}): "
        f"excess {audit.excess_asr:.0%}."
    )


TEXT_WORDING = InheritanceWording(
    inherits="obeys the text trigger",
    effect=_text_effect,
    unknown="Backdoor inheritance not measured: no text trigger known",
    how_to_measure=lambda audit: f"Adversarial transfer: {audit.adversarial_note}.",
)
"""The text audit's words for the shared MLW-BKD-030/034 findings."""


def _findings(
    audit: TextTransferAudit,
    *,
    check: str,
    subject: str,
    strategy: str | None,
    alternative: str | None = None,
) -> list[Finding]:
    """MLW-BKD-030 when the phrase works on the student beyond its baseline."""
    found = inheritance_finding(
        audit,
        check=check,
        subject=subject,
        strategy=strategy,
        alternative=alternative,
        wording=TEXT_WORDING,
    )
    return [] if found is None else [found]


def _evidence(audit: TextTransferAudit) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in audit.as_dict().items()}


def text_transfer_report(
    audit: TextTransferAudit,
    *,
    strategy: str | None,
    report: Report,
    check: str = "transfer",
    subject: str = "student",
    details: dict[str, Any] | None = None,
) -> Report:
    """Metrics and findings of one text audit."""
    m = report.metrics
    m["transfer.student_accuracy"] = round(audit.student_accuracy, 4)
    if audit.teacher_accuracy is not None:
        m["transfer.teacher_accuracy"] = round(audit.teacher_accuracy, 4)
    m["transfer.weight_divergence"] = round(audit.weight_divergence, 4)
    m["transfer.feature_divergence"] = round(audit.feature_divergence, 4)
    if audit.training_seconds is not None:
        m["transfer.training_seconds"] = round(audit.training_seconds, 1)
    m["transfer.trigger_source"] = audit.trigger_source
    if audit.measured:
        m["transfer.asr"] = round(audit.student_asr or 0.0, 4)
        if audit.teacher_asr is not None:
            m["transfer.teacher_asr"] = round(audit.teacher_asr, 4)
        m["transfer.clean_rate"] = round(audit.clean_rate or 0.0, 4)
        m["transfer.baseline_asr"] = round(audit.baseline_asr or 0.0, 4)
        m["transfer.decoy_rate"] = round(audit.decoy_rate or 0.0, 4)
        m["transfer.excess_asr"] = round(audit.excess_asr or 0.0, 4)
        m["transfer.target_class"] = audit.target_class
        m["transfer.trigger_text"] = audit.trigger_text
    if strategy:
        m["transfer.strategy"] = strategy
    found = _findings(audit, check=check, subject=subject, strategy=strategy)
    for f in found:
        report.add(f)
    if not audit.measured:
        report.add(not_measured_finding(audit, check=check, subject=subject, wording=TEXT_WORDING))
    evidence = _evidence(audit)
    if details:
        evidence["training"] = {k: v for k, v in details.items() if k != "pruned_index"}
    advice = (
        "The student follows the text trigger; see MLW-BKD-030."
        if found
        else "Nothing measured here argues against the student; backdoor inheritance "
        + ("stays within the baseline." if audit.measured else "was not measured.")
    )
    if strategy == "linear_probe":
        advice += (
            " A linear probe keeps every teacher feature (feature divergence 0); prefer a "
            "full fine-tune for untrusted teachers."
        )
    report.add(
        Finding(
            id="MLW-BKD-032",
            severity=Severity.INFO,
            check=check,
            location=subject,
            title="Transfer-learning recommendation",
            detail=advice,
            evidence=evidence,
            owasp=["ML07"],
        )
    )
    return report


def _text_epochs_lr(settings: TransferSettings) -> tuple[int, float]:
    """``epochs`` and ``lr`` as set, else the text defaults of `TransferSettings`."""
    given = settings.model_fields_set
    epochs = settings.epochs if "epochs" in given else settings.TEXT_EPOCHS
    lr = settings.lr if "lr" in given else settings.TEXT_LR
    return epochs, lr


def _check_inputs(teacher: Any, data: Any, settings: TransferSettings, student: Any) -> None:
    from mlwarden.io.text_data import TextDataset

    if not isinstance(data, TextDataset):
        raise DataError(
            f"the teacher '{teacher.name}' is a text model; the data is {type(data).__name__}, "
            "not labelled text (give a .jsonl, .csv or .tsv file)"
        )
    if data.labels is None or data.class_names is None:
        raise DataError(f"{data.name}: the transfer audit needs labelled text")
    if len(data) == 0:
        raise DataError(f"{data.name}: the data set is empty")
    if len(torch.unique(data.labels)) < 2:
        raise DataError(f"{data.name}: the labels hold a single class; need at least 2")
    if isinstance(teacher, TextClassifier) and teacher.spec.class_names != data.class_names:
        raise DataError(
            f"{data.name}: the labels ({', '.join(data.class_names)}) are not the teacher's "
            f"classes ({', '.join(teacher.spec.class_names or ())})"
        )
    if settings.trigger is not None:
        raise ParameterError(
            "a mask/pattern trigger (.npz) applies to tensor models; for a text teacher give "
            "trigger_text (--trigger-text PHRASE) with target"
        )
    if settings.target is not None and settings.target >= len(data.class_names):
        raise ParameterError(
            f"target must be a class of the data, 0 to {len(data.class_names) - 1}, got "
            f"{settings.target}"
        )
    if student is not None:
        as_text_model(student, by="the transfer audit")
        if not isinstance(student, TextClassifier):
            raise ParameterError(f"the student '{student.name}' must be a text classifier")
        if student.spec.class_names != data.class_names:
            raise DataError(
                f"{data.name}: the labels ({', '.join(data.class_names)}) are not the student's "
                f"classes ({', '.join(student.spec.class_names or ())})"
            )
        given = [key for key in TRAINING_SETTINGS if key in settings.model_fields_set]
        if given:
            raise ParameterError(
                f"{', '.join(given)} shape(s) the training of a student; the student is given, "
                "so leave them out (or leave the student out to train one)"
            )


def text_trigger(
    teacher: Any,
    texts: Sequence[str],
    settings: TransferSettings,
    *,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> TextTrigger:
    """The user's phrase (``settings.trigger_text``), else, for an encoder teacher, the
    trigger the teacher scan of ``mlwarden backdoor detect`` names on ``texts`` (its
    defaults and seed, so the two cannot disagree; a weak anomaly's candidate is measured
    too, and the baseline decides, as on tensors), else none."""
    if settings.trigger_text is not None:
        return TextTrigger(settings.trigger_text, settings.target, "given", "given by the user")
    if not isinstance(teacher, TextEncoder):
        return TextTrigger(
            None,
            None,
            "none",
            "no text trigger was given, and the teacher is a text classifier, whose trigger "
            "is not searched here; give --trigger-text PHRASE to measure a known one",
        )
    from mlwarden.defenses.detection.encoder_scan import run_encoder_scan
    from mlwarden.defenses.detection.model_scan import BackdoorSettings

    scratch = Report(title="teacher scan")
    try:
        scan = run_encoder_scan(
            teacher,
            texts,
            BackdoorSettings(),
            report=scratch,
            seed=seed,
            subject="teacher",
            progress=progress,
        )
    except DataError as exc:  # too few sentences to scan: not measured, never guessed
        return TextTrigger(None, None, "none", f"the teacher scan could not run: {exc}")
    m = scratch.metrics
    scope = f"that of `mlwarden backdoor detect`, anomaly index {m['backdoor.anomaly_index']}"
    if m["backdoor.detected"]:
        phrase = scan.trigger.text
        return TextTrigger(
            phrase,
            None,
            "teacher scan (trigger_token_search)",
            f"the teacher scan ({scope}, {m['backdoor.severity']}) names the trigger {phrase!r}",
        )
    if m["backdoor.severity"] == Severity.LOW.value:
        phrase = scan.trigger.text
        return TextTrigger(
            phrase,
            None,
            "teacher scan (trigger_token_search, weak anomaly)",
            f"the teacher scan ({scope}) points, below its cut, at {phrase!r}",
        )
    return TextTrigger(
        None,
        None,
        "none",
        f"the teacher scan ({scope}) names no trigger; {NO_TEXT_TRIGGER}",
    )


def run_text_transfer(
    teacher: Any,
    data: Any,
    settings: TransferSettings,
    *,
    report: Report,
    student: Any | None = None,
    seed: int = 0,
    subject: str = "student",
    check: str = "transfer",
    progress: ProgressCallback = null_progress,
) -> TransferRun:
    """`run_transfer` for a text teacher and labelled text (see the module docstring)."""
    from mlwarden.defenses.training.text_students import train_text_student

    as_text_model(teacher, by="the text transfer audit")
    _check_inputs(teacher, data, settings, student)
    seed = seed if settings.seed is None else settings.seed
    known = text_trigger(teacher, list(data.texts), settings, seed=seed, progress=progress)
    report.metrics["transfer.trigger_source"] = known.source
    if student is not None:
        audit = audit_text_transfer(
            teacher, student, data.take(settings.samples), trigger=known, seed=seed
        )
        text_transfer_report(audit, strategy=None, report=report, check=check, subject=subject)
        return TransferRun({"given": audit}, None, 0, min(len(data), settings.samples))
    test, train = data.split(settings.test_fraction, seed=seed)
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"{data.name}: {len(data)} texts leave nothing to train or audit on with "
            f"test_fraction {settings.test_fraction:g}"
        )
    test = test.take(settings.samples)
    epochs, lr = _text_epochs_lr(settings)
    strategies: tuple[str, ...] = (settings.strategy,)
    if settings.strategy == "compare":
        extra = ("trigger_prune",) if known.known else ()
        strategies = (*TEXT_COMPARE_STRATEGIES, *extra)
    audits: dict[str, TextTransferAudit] = {}
    trained = None
    rows = []
    for strategy in strategies:
        result = train_text_student(
            teacher,
            list(train.texts),
            train.labels,
            data.class_names,
            strategy=strategy,
            epochs=epochs,
            lr=lr,
            k=settings.k,
            target_epsilon=settings.epsilon,
            trigger_text=known.phrase,
            seed=seed,
            progress=progress,
        )
        audit = audit_text_transfer(
            teacher,
            result.classifier,
            test,
            trigger=known,
            training_seconds=result.seconds,
            seed=seed,
        )
        audits[strategy] = audit
        rows.append(compare_row(strategy, audit, round(result.seconds, 1)))
        trained = result
        progress("students trained and audited", len(audits), len(strategies))
    report.subject.update(epochs=epochs, lr=lr)  # the text defaults, unless set
    if settings.strategy != "compare":
        assert trained is not None
        text_transfer_report(
            audits[settings.strategy],
            strategy=settings.strategy,
            report=report,
            check=check,
            subject=subject,
            details=trained.details,
        )
        report.metrics["transfer.trained"] = ", ".join(trained.trained)
        if "epsilon" in trained.details:  # DP-SGD: the privacy spent by the student
            report.metrics["transfer.dp_epsilon"] = trained.details["epsilon"]
            report.metrics["transfer.dp_delta"] = trained.details["delta"]
            report.headline.append("transfer.dp_epsilon")
        if "pruned_neurons" in trained.details:
            report.metrics["transfer.pruned_neurons"] = trained.details["pruned_neurons"]
        if "layer" in trained.details:
            report.metrics["transfer.pruned_layer"] = trained.details["layer"]
        return TransferRun(dict(audits), trained.classifier, len(train), len(test))
    _compare_report(audits, rows, report=report, check=check, measured=known.known)
    return TransferRun(dict(audits), None, len(train), len(test))


def _compare_report(
    audits: dict[str, TextTransferAudit],
    rows: list[list[Any]],
    *,
    report: Report,
    check: str,
    measured: bool,
) -> None:
    for row in rows:
        for key, value in zip(_TEXT_COMPARE_METRICS, row[1:], strict=True):
            if value != NOT_MEASURED:
                report.metrics[f"transfer.{row[0]}.{key}"] = value
    for strategy, audit in audits.items():  # without a given target, each student's own
        if audit.target_class is not None:
            report.metrics[f"transfer.{strategy}.target_class"] = audit.target_class
    why = "adversarial transfer n/a on text students"
    if not measured:
        why = "ASR columns n/a: no text trigger known, see MLW-BKD-034; " + why
    report.tables.append(
        Table(
            id="transfer-strategies",
            title=f"Student strategies compared ({why})",
            columns=list(TEXT_COMPARE_COLUMNS),
            rows=rows,
        )
    )
    safe = [s for s, a in audits.items() if inheritance_severity(a) is None]
    best = max(safe, key=lambda s: audits[s].student_accuracy) if safe else None
    for strategy, audit in audits.items():
        for f in _findings(
            audit, check=check, subject=f"student ({strategy})", strategy=strategy, alternative=best
        ):
            report.add(f)
    if not measured:
        first = next(iter(audits.values()))
        report.add(
            not_measured_finding(first, check=check, subject="students", wording=TEXT_WORDING)
        )
    report.metrics["transfer.recommended_strategy"] = best
    advice = (
        "Every strategy tried obeys the text trigger; do not fine-tune from this teacher."
        if best is None
        else f"Use strategy '{best}': the most accurate student"
        + (
            f" whose trigger success stays within {INHERITANCE_MARGIN:g} of its baseline."
            if measured
            else " (no trigger known: the choice is by held-out accuracy alone)."
        )
    )
    report.add(
        Finding(
            id="MLW-BKD-033",
            severity=Severity.INFO if best else Severity.HIGH,
            check=check,
            title="Recommended fine-tuning strategy",
            detail=advice,
            evidence={"recommended": best, "safe": safe},
            owasp=["ML07"],
        )
    )


__all__ = [
    "TEXT_COMPARE_STRATEGIES",
    "TextTransferAudit",
    "TextTrigger",
    "audit_text_transfer",
    "decoy_phrase",
    "phrase_trigger",
    "text_trigger",
    "run_text_transfer",
    "text_transfer_report",
    "trunk_features",
]
