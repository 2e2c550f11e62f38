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
- with ``trigger_text`` and ``target``: the success rate of the phrase inserted into the
  held-out texts not of the target class (`phrase_trigger`), on the student and on a
  classifier teacher, against the student's clean rate (the share of those texts it already
  puts in the target class).

Not measured yet, and said so in the table ("n/a") and the findings: backdoor inheritance
without a given phrase (a text trigger search is a later issue), and adversarial transfer
(text attacks are a later issue). No reference model from scratch either: a transformer
trained from scratch on a few hundred sentences is no baseline for anything.
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
    ATLAS,
    COMPARE_COLUMNS,
    INHERITANCE_HIGH,
    INHERITANCE_MARGIN,
    NOT_MEASURED,
    OWASP,
    TRAINING_SETTINGS,
    TransferRun,
    linear_cka,
    weight_divergence,
)

if TYPE_CHECKING:
    from mlwarden.evaluation.transfer import TransferSettings
    from mlwarden.io.text_data import TextDataset

TEXT_COMPARE_STRATEGIES = ("linear_probe", "last_k", "full", "full_reinit", "fineprune")
"""The strategies ``compare`` trains (``dp`` is a privacy trade, run on its own, as on tensors)."""
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
ADVERSARIAL_NOT_MEASURED = (
    "adversarial transfer is not measured on text: it needs text attacks (token-level "
    "perturbations), which a later issue builds"
)
NO_TEXT_TRIGGER = (
    "no text trigger was given (a text trigger search is a later issue); give "
    "--trigger-text PHRASE --target N to measure a known one"
)


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


def audit_text_transfer(
    teacher: Any,
    student: TextClassifier,
    data: TextDataset,
    *,
    trigger_text: str | None = None,
    target: int | None = None,
    training_seconds: float | None = None,
) -> TextTransferAudit:
    """Accuracy, divergence and (with a phrase) trigger success of ``student`` on ``data``."""
    assert data.labels is not None
    texts, labels = list(data.texts), data.labels
    if student.spec.vocab_size != teacher.spec.vocab_size:
        raise DataError(
            f"teacher and student have vocabularies of {teacher.spec.vocab_size} and "
            f"{student.spec.vocab_size} tokens: the student was not trained from this teacher"
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
    student_asr = teacher_asr = clean = baseline = excess = None
    source, note = "none", NO_TEXT_TRIGGER
    if trigger_text is not None and target is not None:
        others = [t for t, y in zip(texts, labels.tolist(), strict=True) if y != target]
        if not others:
            raise DataError(f"every audit text is of the target class {target}: nothing to measure")
        triggered = phrase_trigger(others, trigger_text)
        student_asr = float((student.predict(triggered).cpu() == target).float().mean())
        clean = float((student.predict(others).cpu() == target).float().mean())
        if classifier_teacher:
            teacher_asr = float((teacher.predict(triggered).cpu() == target).float().mean())
        baseline, excess = clean, student_asr - clean
        source = "given"
        note = (
            f"the phrase {trigger_text!r} inserted at the start of {len(others)} held-out texts "
            f"not of class {target}"
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
        target_class=target if source == "given" else None,
        trigger_source=source,
        trigger_note=note,
    )


def _severity(audit: TextTransferAudit) -> Severity | None:
    if audit.excess_asr is None or audit.excess_asr <= INHERITANCE_MARGIN:
        return None
    return Severity.HIGH if audit.excess_asr >= INHERITANCE_HIGH else Severity.MEDIUM


def _evidence(audit: TextTransferAudit) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in audit.as_dict().items()}


def _findings(
    audit: TextTransferAudit,
    *,
    check: str,
    subject: str,
    strategy: str | None,
    alternative: str | None = None,
) -> list[Finding]:
    """MLW-BKD-030 when the phrase works on the student beyond its clean rate."""
    severity = _severity(audit)
    if severity is None:
        return []
    by = f" (strategy {strategy})" if strategy else ""
    fix = (
        f"retrain with strategy '{alternative}', which measured without it"
        if alternative and alternative != strategy
        else "retrain it another way (`--strategy compare` measures each strategy)"
    )
    return [
        Finding(
            id="MLW-BKD-030",
            severity=severity,
            check=check,
            location=subject,
            title=f"The student{by} obeys the text trigger",
            detail=f"{audit.trigger_note}: the student puts {audit.student_asr:.0%} of them in "
            f"class {audit.target_class}, {audit.clean_rate:.0%} without the phrase (excess "
            f"{audit.excess_asr:.0%}). Do not deploy it: {fix}, or choose another teacher.",
            evidence=_evidence(audit),
            atlas=ATLAS,
            owasp=OWASP,
        )
    ]


def _not_measured(audit: TextTransferAudit, *, check: str, subject: str) -> Finding:
    return Finding(
        id="MLW-BKD-034",
        severity=Severity.INFO,
        check=check,
        location=subject,
        title="Backdoor inheritance not measured: no text trigger known",
        detail=f"{audit.trigger_note}. Adversarial transfer: {audit.adversarial_note}.",
        evidence={"trigger_source": audit.trigger_source, "trigger_note": audit.trigger_note},
        atlas=ATLAS,
        owasp=OWASP,
    )


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
        m["transfer.excess_asr"] = round(audit.excess_asr or 0.0, 4)
        m["transfer.target_class"] = audit.target_class
    if strategy:
        m["transfer.strategy"] = strategy
    found = _findings(audit, check=check, subject=subject, strategy=strategy)
    for f in found:
        report.add(f)
    if not audit.measured:
        report.add(_not_measured(audit, check=check, subject=subject))
    evidence = _evidence(audit)
    if details:
        evidence["training"] = {k: v for k, v in details.items() if k != "pruned_index"}
    advice = (
        "The student follows the text trigger; see MLW-BKD-030."
        if found
        else "Nothing measured here argues against the student; backdoor inheritance "
        + ("stays within the clean rate." if audit.measured else "was not measured.")
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


def _row(name: str, audit: TextTransferAudit) -> list[Any]:
    def cell(value: float | None) -> float | str:
        return NOT_MEASURED if value is None else round(value, 4)

    return [
        name,
        round(audit.student_accuracy, 4),
        cell(audit.student_asr),
        cell(audit.baseline_asr),
        cell(audit.excess_asr),
        NOT_MEASURED,
        round(audit.weight_divergence, 4),
        round(audit.feature_divergence, 4),
        NOT_MEASURED if audit.training_seconds is None else round(audit.training_seconds, 1),
    ]


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
    phrase = settings.trigger_text
    if student is not None:
        audit = audit_text_transfer(
            teacher,
            student,
            data.take(settings.samples),
            trigger_text=phrase,
            target=settings.target,
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
    strategies = TEXT_COMPARE_STRATEGIES if settings.strategy == "compare" else (settings.strategy,)
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
            seed=seed,
            progress=progress,
        )
        audit = audit_text_transfer(
            teacher,
            result.classifier,
            test,
            trigger_text=phrase,
            target=settings.target,
            training_seconds=result.seconds,
        )
        audits[strategy] = audit
        rows.append(_row(strategy, audit))
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
            report.metrics["transfer.pruned_layer"] = trained.details["layer"]
        return TransferRun(dict(audits), trained.classifier, len(train), len(test))
    _compare_report(audits, rows, report=report, check=check, measured=phrase is not None)
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
    why = "adversarial transfer n/a: text attacks come in a later issue"
    if not measured:
        why = "ASR columns n/a: no text trigger given; " + why
    report.tables.append(
        Table(
            id="transfer-strategies",
            title=f"Student strategies compared ({why})",
            columns=list(TEXT_COMPARE_COLUMNS),
            rows=rows,
        )
    )
    safe = [s for s, a in audits.items() if _severity(a) is None]
    best = max(safe, key=lambda s: audits[s].student_accuracy) if safe else None
    for strategy, audit in audits.items():
        for f in _findings(
            audit, check=check, subject=f"student ({strategy})", strategy=strategy, alternative=best
        ):
            report.add(f)
    if not measured:
        report.add(_not_measured(next(iter(audits.values())), check=check, subject="students"))
    report.metrics["transfer.recommended_strategy"] = best
    advice = (
        "Every strategy tried obeys the text trigger; do not fine-tune from this teacher."
        if best is None
        else f"Use strategy '{best}': the most accurate student"
        + (
            f" whose trigger success stays within {INHERITANCE_MARGIN:g} of its clean rate."
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
    "audit_text_transfer",
    "phrase_trigger",
    "run_text_transfer",
    "text_transfer_report",
    "trunk_features",
]
