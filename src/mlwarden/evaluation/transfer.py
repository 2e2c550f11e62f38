"""The transfer audit: does a teacher's backdoor, or its adversarial examples, reach the student?

Measures, for a teacher and a student fine-tuned from it:

(a) the attack success rate of the teacher's trigger on the student (the known trigger,
    or the one Neural Cleanse reverse-engineers from the teacher when none is given);
(b) the transferability of adversarial examples crafted on the teacher with
    `mlwarden.attacks.evasion.PGD` (Papernot et al., "Transferability in Machine
    Learning", 2016: a public teacher is a free surrogate for attacking its students);
(c) how far the student moved: relative L2 distance of weights matched by name, and
    feature divergence ``1 - linear CKA`` of the penultimate representations (Kornblith
    et al., "Similarity of Neural Network Representations Revisited", ICML 2019);

and writes a recommendation. `compare_strategies` trains a student per strategy and
tabulates the lot.

`TransferSettings` and `run_transfer` are this capability's one front door: ``mlwarden
transfer`` adapts its flags to the settings and the ``transfer`` audit check is
configured by them (``[checks.transfer]``); both call the runner. Without a student the
runner trains one from the teacher (``strategy``, or ``compare`` for all of them) on part
of the data and audits it on the rest; with a student given (``--student``, or
``teacher`` in the check, the model under audit being the student) it only audits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import AliasChoices, Field, field_validator

from mlwarden.audit.registry import AuditContext, CheckConfig, CheckSkipped, register_check
from mlwarden.core.contract import Capability, note_assumptions, require
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress

ATLAS = ["AML.T0018.000"]
OWASP = ["ML07", "ML10"]  # Transfer Learning Attack, Model Poisoning

if TYPE_CHECKING:
    from mlwarden.core.classifier import Classifier
    from mlwarden.io.dataset import Dataset

# What each model must offer (`mlwarden.core.contract`), checked before any work.
TEACHER_NEEDS = (Capability.GRADIENTS, Capability.FEATURES, Capability.TRAINABLE)
"""The trigger scan and PGD backpropagate through the teacher; features and weights are compared."""
STUDENT_NEEDS = (Capability.FEATURES, Capability.TRAINABLE)
"""The student's features and weights are compared with the teacher's."""
FINE_TUNING_NEEDS = (Capability.TRAINABLE,)
"""Training a student copies the teacher's weights and fine-tunes them."""


@dataclass
class TransferAudit:
    """The numbers of one teacher/student pair (None where not measured)."""

    student_accuracy: float
    teacher_accuracy: float
    teacher_asr: float | None
    student_asr: float | None
    clean_rate: (
        float | None
    )  # fraction of non-target clean inputs the student already puts in the target
    target_class: int | None
    adversarial_transfer_rate: float | None
    weight_divergence: float
    feature_divergence: float
    trigger_source: str  # "given", "reverse-engineered" or "none"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_divergence(teacher: torch.nn.Module, student: torch.nn.Module) -> float:
    """``||theta_s - theta_t|| / ||theta_t||`` over parameters matched by name and shape."""
    t_params = dict(teacher.named_parameters())
    num, den = 0.0, 0.0
    for name, p in student.named_parameters():
        ref = t_params.get(name)
        if ref is None or ref.shape != p.shape:
            continue
        num += float((p.detach().cpu() - ref.detach().cpu()).pow(2).sum())
        den += float(ref.detach().cpu().pow(2).sum())
    if den == 0.0:
        raise DataError("teacher and student share no parameters of the same name and shape")
    return (num / den) ** 0.5


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of two (N, d) representations.

    1 means the same representation up to rotation and scale.
    """
    a = a.double() - a.double().mean(0, keepdim=True)
    b = b.double() - b.double().mean(0, keepdim=True)
    cross = (b.T @ a).norm() ** 2
    denom = (a.T @ a).norm() * (b.T @ b).norm()
    return float(cross / denom) if float(denom) > 0 else 0.0


def feature_divergence(
    teacher: Any, student: Any, x: torch.Tensor, layer: str | None = None
) -> float:
    """``1 - linear CKA`` of penultimate features of teacher and student on ``x``."""
    name = layer or teacher.penultimate_layer()
    return 1.0 - linear_cka(teacher.features(x, name).cpu(), student.features(x, name).cpu())


def adversarial_transfer_rate(
    teacher: Any,
    student: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    seed: int,
) -> float | None:
    """Of the PGD examples that fool the teacher, the fraction that fool the student.

    Crafted on the inputs both models classify correctly.
    """
    from mlwarden.attacks.evasion import PGD

    both = (teacher.predict(x).cpu() == y) & (student.predict(x).cpu() == y)
    if not bool(both.any()):
        return None
    xs, ys = x[both], y[both]
    result = PGD(eps, steps=steps, seed=seed)(teacher, xs, ys)
    fooled_teacher = result.success.cpu()
    if not bool(fooled_teacher.any()):
        return 0.0
    fooled_student = student.predict(result.x_adv[fooled_teacher]).cpu() != ys[fooled_teacher]
    return float(fooled_student.float().mean())


def teacher_trigger(
    teacher: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int | None = None,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> tuple[Any | None, int | None]:
    """(trigger, target) the model scan reverse-engineers from ``teacher``, or (None, None)
    when it flags no class; the method with the highest anomaly index decides."""
    from mlwarden.defenses.detection.model_scan import scan_model

    scans = scan_model(teacher, x, y, steps=steps, seed=seed, progress=progress)
    best = max(scans, key=lambda s: s.max_anomaly_index)
    if best.target_class is None:
        return None, None
    return best.trigger_for(best.target_class), best.target_class


def audit_transfer(
    teacher: Any,
    student: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    trigger: Any | None = None,
    target: int | None = None,
    reverse_engineer: bool = True,
    eps: float = 0.1,
    pgd_steps: int = 20,
    max_samples: int = 400,
    scan_steps: int | None = None,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> TransferAudit:
    """Measure (a) backdoor ASR on the student, (b) adversarial transferability, (c) divergence.

    With no ``trigger``, and ``reverse_engineer`` true, Neural Cleanse and the universal
    perturbation scan run on the teacher; when they flag a class, its reverse-engineered
    trigger is what (a) measures.
    """
    from mlwarden.attacks.poisoning.metrics import attack_success_rate

    if (
        teacher.spec.shape != student.spec.shape
        or teacher.spec.num_classes != student.spec.num_classes
    ):
        raise DataError(
            f"teacher and student disagree on the input spec: shape {teacher.spec.shape} vs "
            f"{student.spec.shape}, {teacher.spec.num_classes} vs {student.spec.num_classes} "
            "classes"
        )
    student.spec.validate_batch(x, what="audit data")
    student.spec.validate_labels(y, what="audit labels")
    if len(torch.unique(y)) < 2:
        raise DataError("the audit data holds a single class; need at least 2")
    if (trigger is None) != (target is None):
        raise ParameterError("give both trigger and target, or neither")
    x, y = x[:max_samples], y[:max_samples]
    source = "given" if trigger is not None else "none"
    if trigger is None and reverse_engineer:
        trigger, target = teacher_trigger(
            teacher, x, y, steps=scan_steps, seed=seed, progress=progress
        )
        if trigger is not None:
            source = "reverse-engineered"
    teacher_asr = student_asr = clean_rate = None
    if trigger is not None and target is not None:
        teacher_asr = attack_success_rate(teacher, x, y, trigger, target)
        student_asr = attack_success_rate(student, x, y, trigger, target)
        keep = y != target
        clean_rate = float((student.predict(x[keep]).cpu() == target).float().mean())
    transfer = adversarial_transfer_rate(
        teacher, student, x, y, eps=eps, steps=pgd_steps, seed=seed
    )
    return TransferAudit(
        student_accuracy=student.accuracy(x, y),
        teacher_accuracy=teacher.accuracy(x, y),
        teacher_asr=teacher_asr,
        student_asr=student_asr,
        clean_rate=clean_rate,
        target_class=target,
        adversarial_transfer_rate=transfer,
        weight_divergence=weight_divergence(teacher.module, student.module),
        feature_divergence=feature_divergence(teacher, student, x),
        trigger_source=source,
    )


def inherits_backdoor(audit: TransferAudit, margin: float = 0.2) -> bool:
    """True when the student's ASR exceeds its clean rate by more than ``margin``."""
    if audit.student_asr is None or audit.clean_rate is None:
        return False
    return audit.student_asr - audit.clean_rate > margin


def recommendation(audit: TransferAudit, strategy: str | None = None) -> str:
    """One paragraph of advice from the audit's numbers."""
    parts = []
    if inherits_backdoor(audit):
        parts.append(
            f"The student inherits the teacher's backdoor (ASR {audit.student_asr:.2f} vs clean "
            f"rate {audit.clean_rate:.2f}). Do not deploy it: retrain with strategy 'fineprune' "
            "or 'full_reinit' and re-run this audit, or choose another teacher."
        )
    elif audit.student_asr is not None:
        parts.append(
            f"The teacher's trigger no longer works on the student (ASR {audit.student_asr:.2f}, "
            f"clean rate {audit.clean_rate:.2f})."
        )
    else:
        parts.append("No backdoor trigger was found in the teacher to test on the student.")
    if audit.adversarial_transfer_rate is not None and audit.adversarial_transfer_rate > 0.5:
        parts.append(
            f"{audit.adversarial_transfer_rate:.0%} of adversarial examples crafted on the teacher "
            "fool the student: anyone holding the public teacher can attack it. Use adversarial "
            "training or a private teacher, and keep the student's weights secret."
        )
    if strategy == "linear_probe":
        parts.append(
            "A linear probe keeps every teacher feature; prefer a full fine-tune for untrusted "
            "teachers."
        )
    return " ".join(parts)


def transfer_report(
    audit: TransferAudit,
    *,
    strategy: str | None = None,
    report: Report | None = None,
    check: str = "transfer",
    subject: str = "student",
) -> Report:
    """Metrics and findings of one audit."""
    report = report or Report(title="mlwarden transfer audit")
    m = report.metrics
    m["transfer.student_accuracy"] = round(audit.student_accuracy, 4)
    m["transfer.teacher_accuracy"] = round(audit.teacher_accuracy, 4)
    m["transfer.teacher_asr"] = None if audit.teacher_asr is None else round(audit.teacher_asr, 4)
    m["transfer.asr"] = None if audit.student_asr is None else round(audit.student_asr, 4)
    m["transfer.clean_rate"] = None if audit.clean_rate is None else round(audit.clean_rate, 4)
    m["transfer.target_class"] = audit.target_class
    m["transfer.adversarial_transfer_rate"] = (
        None
        if audit.adversarial_transfer_rate is None
        else round(audit.adversarial_transfer_rate, 4)
    )
    m["transfer.weight_divergence"] = round(audit.weight_divergence, 4)
    m["transfer.feature_divergence"] = round(audit.feature_divergence, 4)
    m["transfer.trigger_source"] = audit.trigger_source
    if strategy:
        m["transfer.strategy"] = strategy
    evidence = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in audit.as_dict().items()}
    if inherits_backdoor(audit):
        report.add(
            Finding(
                id="MLW-BKD-030",
                severity=Severity.HIGH,
                check=check,
                location=subject,
                title="The student inherits the teacher's backdoor",
                detail=f"the teacher's trigger ({audit.trigger_source}) sends "
                f"{audit.student_asr:.0%} of inputs to class {audit.target_class} on the student "
                f"(clean rate {audit.clean_rate:.0%})",
                evidence=evidence,
                atlas=ATLAS,
                owasp=OWASP,
            )
        )
    if audit.adversarial_transfer_rate is not None and audit.adversarial_transfer_rate > 0.5:
        report.add(
            Finding(
                id="MLW-BKD-031",
                severity=Severity.MEDIUM,
                check=check,
                location=subject,
                title="Adversarial examples crafted on the teacher transfer to the student",
                detail=f"{audit.adversarial_transfer_rate:.0%} of PGD examples that fool the "
                "teacher also fool the student",
                evidence=evidence,
                atlas=["AML.T0043"],
                owasp=["ML07", "ML01"],
            )
        )
    report.add(
        Finding(
            id="MLW-BKD-032",
            severity=Severity.INFO,
            check=check,
            location=subject,
            title="Transfer-learning recommendation",
            detail=recommendation(audit, strategy),
            evidence=evidence,
            owasp=["ML07"],
        )
    )
    return report


def compare_strategies(
    teacher: Any,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    strategies: Sequence[str] = ("linear_probe", "last_k", "full", "full_reinit", "fineprune"),
    trigger: Any | None = None,
    target: int | None = None,
    epochs: int = 10,
    eps: float = 0.1,
    max_samples: int = 400,
    scan_steps: int | None = None,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
    report: Report | None = None,
    **train_kwargs: Any,
) -> tuple[Report, dict[str, TransferAudit]]:
    """Train one student per strategy, audit each, and tabulate them in one `Report`.

    The teacher's trigger (unless given) is searched once, on the audit samples every
    student is then measured on.
    """
    from mlwarden.defenses.training.finetune import train_student

    if trigger is None:
        trigger, target = teacher_trigger(
            teacher,
            test_x[:max_samples],
            test_y[:max_samples],
            steps=scan_steps,
            seed=seed,
            progress=progress,
        )
    audits: dict[str, TransferAudit] = {}
    rows = []
    report = report or Report(title="mlwarden transfer: strategy comparison")
    for strategy in strategies:
        student = train_student(
            teacher,
            train_x,
            train_y,
            strategy=strategy,
            epochs=epochs,
            seed=seed,
            progress=progress,
            **train_kwargs,
        ).classifier
        audit = audit_transfer(
            teacher,
            student,
            test_x,
            test_y,
            trigger=trigger,
            target=target,
            reverse_engineer=False,
            eps=eps,
            max_samples=max_samples,
            seed=seed,
            progress=progress,
        )
        audits[strategy] = audit
        rows.append(
            [
                strategy,
                round(audit.student_accuracy, 4),
                None if audit.student_asr is None else round(audit.student_asr, 4),
                None
                if audit.adversarial_transfer_rate is None
                else round(audit.adversarial_transfer_rate, 4),
                round(audit.weight_divergence, 4),
                round(audit.feature_divergence, 4),
            ]
        )
        report.metrics[f"transfer.{strategy}.asr"] = rows[-1][2]
        report.metrics[f"transfer.{strategy}.accuracy"] = rows[-1][1]
    report.tables.append(
        Table(
            id="transfer-strategies",
            title="Student strategies compared",
            columns=[
                "strategy",
                "clean accuracy",
                "backdoor ASR",
                "adversarial transfer",
                "weight divergence",
                "feature divergence",
            ],
            rows=rows,
        )
    )
    safe = [s for s in strategies if not inherits_backdoor(audits[s])]
    if safe:
        best = max(safe, key=lambda s: audits[s].student_accuracy)
        advice = (
            f"Use strategy '{best}': the most accurate student that does not carry the "
            "teacher's backdoor."
        )
    else:
        best = None
        advice = "Every strategy tried keeps the backdoor; do not fine-tune from this teacher."
    report.metrics["transfer.recommended_strategy"] = best
    report.add(
        Finding(
            id="MLW-BKD-033",
            severity=Severity.INFO if best else Severity.HIGH,
            check="transfer",
            title="Recommended fine-tuning strategy",
            detail=advice,
            evidence={"recommended": best, "safe": safe},
            owasp=["ML07"],
        )
    )
    return report, audits


# -- the front door: settings, runner, audit check ---------------------------------------------
TRAINING_SETTINGS = ("strategy", "epochs", "lr", "k", "epsilon", "test_fraction")
"""Settings that shape the student's training; meaningless when the student is given."""


class TransferSettings(CheckConfig):
    """Settings of the transfer audit: ``mlwarden transfer`` flags and ``[checks.transfer]``."""

    strategy: str = Field(
        "full_reinit", description="fine-tuning strategy of the student, or 'compare' (all)"
    )
    epochs: int = Field(10, ge=1, description="student training epochs")
    lr: float = Field(1e-3, gt=0, description="student learning rate")
    k: int = Field(1, ge=1, description="blocks trained by strategy last_k")
    epsilon: float = Field(2.0, gt=0, description="privacy budget of strategy dp (DP-SGD)")
    test_fraction: float = Field(
        0.25, gt=0, lt=1, description="share of the data held out to audit the student on"
    )
    eps: float = Field(0.1, gt=0, description="L-inf radius of the transferability PGD")
    samples: int = Field(
        400,
        ge=2,
        validation_alias=AliasChoices("samples", "max_samples"),  # max_samples: older files
        description="audit at most this many samples",
    )
    scan_steps: int | None = Field(
        None, ge=1, description="steps of the teacher trigger scan (default: the detector's)"
    )
    seed: int | None = Field(None, description="default: the audit seed (--seed on the command)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from mlwarden.defenses.training.finetune import STRATEGIES

        if value != "compare" and value not in STRATEGIES:
            raise ValueError(f"must be one of {', '.join(STRATEGIES)} or compare, got '{value}'")
        return value


class TransferCheck(TransferSettings):
    """``[checks.transfer]``: without ``teacher`` the model under audit is the teacher and a
    student is trained from it on the audit data; with ``teacher`` the model under audit is
    the student of that teacher and is audited as it is."""

    teacher: str | None = Field(
        None, description="path of the teacher model (.pt2 or weights with teacher_factory)"
    )
    teacher_factory: str | None = Field(
        None, description="module:factory for a weights-only teacher"
    )


def require_teacher(teacher: Any, *, trains: bool) -> None:
    """The contract's `ParameterError` unless ``teacher`` offers what the audit needs, and
    what fine-tuning a student from it needs when ``trains``."""
    if trains:
        require(teacher, FINE_TUNING_NEEDS, by="fine-tuning a student", hint="the teacher")
    require(teacher, TEACHER_NEEDS, by="the transfer audit", hint="the teacher")


def require_student(student: Any) -> None:
    """The contract's `ParameterError` unless a given ``student`` offers what the audit needs."""
    require(student, STUDENT_NEEDS, by="the transfer audit", hint="the student")


@dataclass
class TransferRun:
    """What `run_transfer` did: the audits by strategy, the student it trained (single
    strategy only) and the sizes of the training and audit parts of the data."""

    audits: dict[str, TransferAudit]
    student: Classifier | None
    train_samples: int
    test_samples: int


def run_transfer(
    teacher: Any,
    data: Dataset,
    settings: TransferSettings,
    *,
    report: Report,
    student: Any | None = None,
    seed: int = 0,
    subject: str = "student",
    check: str = "transfer",
    progress: ProgressCallback = null_progress,
) -> TransferRun:
    """Audit ``student`` against ``teacher`` on ``data``, or, with no student, train one per
    ``settings.strategy`` on part of ``data`` and audit it on the rest; into ``report``.

    ``seed`` is the caller's (``--seed``, the audit's) unless ``settings.seed`` is set.
    """
    if student is not None:
        require_student(student)
    require_teacher(teacher, trains=student is None)
    if student is not None:
        given = [key for key in TRAINING_SETTINGS if key in settings.model_fields_set]
        if given:
            raise ParameterError(
                f"{', '.join(given)} shape(s) the training of a student; the student is given, "
                "so leave them out (or leave the student out to train one)"
            )
    seed = seed if settings.seed is None else settings.seed
    note_assumptions(report, teacher, check)
    if student is not None:
        note_assumptions(report, student, check)
        audit = audit_transfer(
            teacher,
            student,
            data.x,
            data.y,
            eps=settings.eps,
            max_samples=settings.samples,
            scan_steps=settings.scan_steps,
            seed=seed,
            progress=progress,
        )
        transfer_report(audit, report=report, check=check, subject=subject)
        return TransferRun({"given": audit}, None, 0, len(data))
    test, train = data.split(settings.test_fraction, seed=seed)
    if settings.strategy == "compare":
        _, audits = compare_strategies(
            teacher,
            train.x,
            train.y,
            test.x,
            test.y,
            epochs=settings.epochs,
            eps=settings.eps,
            max_samples=settings.samples,
            scan_steps=settings.scan_steps,
            seed=seed,
            progress=progress,
            report=report,
            lr=settings.lr,
            k=settings.k,
        )
        return TransferRun(audits, None, len(train), len(test))
    from mlwarden.defenses.training.finetune import train_student

    trained = train_student(
        teacher,
        train.x,
        train.y,
        strategy=settings.strategy,
        k=settings.k,
        epochs=settings.epochs,
        lr=settings.lr,
        target_epsilon=settings.epsilon,
        seed=seed,
        progress=progress,
    )
    audit = audit_transfer(
        teacher,
        trained.classifier,
        test.x,
        test.y,
        eps=settings.eps,
        max_samples=settings.samples,
        scan_steps=settings.scan_steps,
        seed=seed,
        progress=progress,
    )
    transfer_report(audit, strategy=settings.strategy, report=report, check=check, subject=subject)
    if "epsilon" in trained.details:  # DP-SGD: the privacy spent by the student
        report.metrics["transfer.dp_epsilon"] = trained.details["epsilon"]
        report.metrics["transfer.dp_delta"] = trained.details["delta"]
        report.headline.append("transfer.dp_epsilon")
    return TransferRun({settings.strategy: audit}, trained.classifier, len(train), len(test))


@register_check("transfer", TransferCheck, title="Teacher-to-student transfer audit", cost=80)
def transfer_check(ctx: AuditContext, cfg: TransferCheck) -> None:
    """The model under audit as the teacher (students trained here) or, with ``teacher``
    set, as the student of that teacher."""
    from mlwarden.io.models import load_model

    student = None if cfg.teacher is None else ctx.model
    try:
        if student is None:
            teacher = ctx.model
        else:
            require_student(student)  # before loading the teacher
            teacher = load_model(
                ctx.resolve(cfg.teacher),  # type: ignore[arg-type]
                factory=cfg.teacher_factory,
                spec=student.spec,
                device=ctx.device,
                allow=ctx.allow_imports,
            )
        require_teacher(teacher, trains=student is None)
    except ParameterError as exc:
        raise CheckSkipped(str(exc)) from None
    run_transfer(
        teacher,
        ctx.data,
        cfg,
        report=ctx.report,
        student=student,
        seed=ctx.seed,
        subject=str(ctx.model_source),
        progress=ctx.progress,
    )
