"""The transfer audit: does a teacher's backdoor, or its adversarial examples, reach the student?

Measures, for a teacher and a student fine-tuned from it:

(a) the attack success rate (ASR) of the teacher's trigger on the student *above its
    baseline*: the trigger is the user's (``--trigger``) or the one the teacher scan of
    ``mlwarden backdoor detect`` reverse-engineers, and with neither it is not measured;
    the baseline is the larger of the trigger's ASR on a clean reference trained from
    scratch on the student's data (a trigger-shaped perturbation alone moves some inputs
    of any model) and the student's clean rate (non-target inputs it already puts in the
    target class), and inheritance is graded on the excess;
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

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import AliasChoices, Field, field_validator, model_validator

from mlwarden.attacks.poisoning.triggers import MaskPatternTrigger, Trigger
from mlwarden.audit.registry import AuditContext, CheckConfig, CheckSkipped, register_check
from mlwarden.core.contract import Capability, note_assumptions, require
from mlwarden.core.errors import DataError, InputError, ParameterError
from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.core.spec import InputSpec
from mlwarden.defenses.detection.calibration import INHERITANCE

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


INHERITANCE_MARGIN = INHERITANCE.medium
"""Excess ASR (student ASR minus the baseline) above which the student is said to inherit
the backdoor (MEDIUM): calibrated on clean teacher -> student pairs (`INHERITANCE`)."""
INHERITANCE_HIGH = INHERITANCE.high
"""Excess ASR from which the inheritance is HIGH (`INHERITANCE`)."""
TRANSFER_ALERT = 0.5
"""Adversarial transfer rate above which MLW-BKD-031 is raised."""
NOT_MEASURED = "n/a"  # no trigger known: the table title and MLW-BKD-034 say so
"""A table cell whose figure needs a trigger when none is known."""
REFERENCE_ROW = "reference (from scratch)"
"""The comparison's row of the clean reference, whose ASR is the baseline."""


@dataclass(frozen=True)
class KnownTrigger:
    """The trigger the audit measures, its target, where it came from and why.

    ``trigger`` is None when none is known: the teacher scan flagged no class and the user
    gave none. Inheritance is then not measured, never guessed.
    """

    trigger: Trigger | None
    target: int | None
    source: str  # "given", "teacher scan (<method>[, weak anomaly])" or "none"
    note: str

    @property
    def known(self) -> bool:
        return self.trigger is not None and self.target is not None


def given_trigger(trigger: Trigger, target: int, note: str = "given by the user") -> KnownTrigger:
    """A trigger handed in by the caller."""
    return KnownTrigger(trigger, target, "given", note)


def teacher_trigger(
    teacher: Any,
    data: Dataset,
    *,
    steps: int | None = None,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> KnownTrigger:
    """The trigger of the class ``mlwarden backdoor detect`` flags on ``teacher`` with ``data``.

    The very scan of the command: `run_backdoor_scan` with the default `BackdoorSettings`
    (``steps`` overrides only the optimisation steps), on the same data and seed, so the
    two verdicts cannot disagree and the detector's calibration applies here unchanged.
    """
    from mlwarden.defenses.detection.model_scan import BackdoorSettings, run_backdoor_scan

    settings = BackdoorSettings() if steps is None else BackdoorSettings(steps=steps)
    scratch = Report(title="teacher scan")
    scans = run_backdoor_scan(
        teacher, data, settings, report=scratch, seed=seed, subject="teacher", progress=progress
    )
    from mlwarden.defenses.detection.calibration import assess

    flagged = [s for s in scans if s.is_backdoored]
    top = scratch.metrics.get("backdoor.anomaly_index")
    scope = f"{', '.join(settings.methods)} on {min(len(data), settings.samples)} samples"
    # the command's verdict (its report's metrics) decides; the scans only supply the trigger
    detected = scratch.metrics.get("backdoor.detected", int(bool(flagged)))
    target = scratch.metrics.get("backdoor.target_class")
    if not isinstance(target, int):
        target = flagged[0].target_class if flagged else None
    weak = ""
    if not detected or target is None:
        # A weak anomaly (LOW: a statistic within the band below its cut) still names a
        # class and a reverse-engineered trigger. Measuring it costs one student forward
        # pass, and the excess over the from-scratch reference decides: a clean teacher's
        # candidate moves the reference as much as the student, a real backdoor does not.
        assessment = assess(scans)
        if assessment.severity is not Severity.LOW or assessment.target is None:
            return KnownTrigger(
                None,
                None,
                "none",
                f"the teacher scan (that of `mlwarden backdoor detect`: {scope}) flags no "
                f"class and shows no weak anomaly (highest anomaly index {top})",
            )
        target = assessment.target
        weak = f", weak anomaly: {assessment.reason}"
    scan = next((s for s in flagged if s.target_class == target), (flagged or scans)[0])
    verb = "flags" if not weak else "points, below its cut, at"
    return KnownTrigger(
        scan.trigger_for(target),
        target,
        f"teacher scan ({scan.method}{', weak anomaly' if weak else ''})",
        f"the teacher scan (that of `mlwarden backdoor detect`: {scope}) {verb} class "
        f"{target} (anomaly index {top}{weak}); its {scan.method} trigger is measured",
    )


def load_trigger(path: str | Path, spec: InputSpec) -> MaskPatternTrigger:
    """A mask/pattern trigger from an ``.npz`` with arrays ``mask`` and ``pattern``, checked
    against the model's input: ``pattern`` of the input shape inside its bounds, ``mask``
    broadcastable to it with values in [0, 1] and not all zero."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"trigger file '{path}' not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"trigger file '{path}' is not a readable .npz archive: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"trigger file '{path}' holds a single array, not an .npz archive")
    with archive:
        missing = [k for k in ("mask", "pattern") if k not in archive.files]
        if missing:
            raise DataError(
                f"trigger file '{path}' lacks array(s) {', '.join(missing)}; it needs 'mask' "
                f"and 'pattern' (has: {', '.join(archive.files) or 'nothing'})"
            )
        try:
            mask, pattern = archive["mask"], archive["pattern"]
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"trigger file '{path}' is unreadable: {exc}") from None
    shape = tuple(spec.shape)
    for name, arr in (("mask", mask), ("pattern", pattern)):
        if arr.dtype.kind not in "biuf":
            raise DataError(f"trigger {name} must be numeric, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise DataError(f"trigger {name} contains NaN or infinite values")
    if tuple(pattern.shape) != shape:
        raise DataError(
            f"trigger pattern has shape {tuple(pattern.shape)}; the model's input is {shape}"
        )
    try:
        fits = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise DataError(
            f"trigger mask of shape {tuple(mask.shape)} does not broadcast to the model's input "
            f"{shape}"
        )
    if float(mask.min()) < 0.0 or float(mask.max()) > 1.0:
        raise DataError(
            f"trigger mask values must lie in [0, 1], got [{float(mask.min()):g}, "
            f"{float(mask.max()):g}]"
        )
    if not bool((mask > 0).any()):
        raise DataError("trigger mask is all zero: it leaves every input unchanged")
    low, high = spec.bounds
    tol = 1e-6 * max(1.0, high - low)
    if float(pattern.min()) < low - tol or float(pattern.max()) > high + tol:
        raise DataError(
            f"trigger pattern values [{float(pattern.min()):g}, {float(pattern.max()):g}] lie "
            f"outside the model's input bounds [{low:g}, {high:g}]"
        )
    return MaskPatternTrigger(
        torch.as_tensor(mask, dtype=torch.float32), torch.as_tensor(pattern, dtype=torch.float32)
    )


def trigger_from_file(path: str | Path, target: int, spec: InputSpec) -> KnownTrigger:
    """`load_trigger` and a target class checked against the model's classes."""
    if not 0 <= target < spec.num_classes:
        raise ParameterError(
            f"target must be a class of the model, 0 to {spec.num_classes - 1}, got {target}"
        )
    return given_trigger(load_trigger(path, spec), target, f"given by the user ({path})")


def reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter of ``module`` in place as a fresh model's would be: weights
    with PyTorch's default (Kaiming-uniform, a=sqrt(5)), norm scales 1, biases 0, running
    statistics reset. Works by name and shape, so it also serves ``.pt2`` graphs, whose
    layers are no longer `nn.Linear`/`nn.Conv2d` with ``reset_parameters``."""
    gen = make_generator(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                torch.nn.init.kaiming_uniform_(p, a=5**0.5, generator=gen)
            elif name.rsplit(".", 1)[-1] == "weight":
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean" or leaf == "num_batches_tracked":
                b.zero_()
            elif leaf == "running_var":
                b.fill_(1.0)


def reference_model(
    teacher: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> Classifier:
    """The clean reference of the inheritance baseline: the teacher's architecture,
    re-initialised and trained from scratch on the student's data (it never saw the
    teacher's weights, so whatever the trigger does to it, it does without a backdoor)."""
    from mlwarden.core.training import fit, trainable_copy

    reference = trainable_copy(teacher, name=f"{teacher.name}-reference")
    reinitialise(reference.module, seed)
    fit(
        reference,
        x,
        y,
        epochs=epochs,
        lr=lr,
        seed=seed,
        progress=progress,
        task="reference (from scratch)",
    )
    reference.eval()
    return reference


@dataclass
class TransferAudit:
    """The numbers of one teacher/student pair (None where no trigger is known).

    ``baseline_asr`` is what the trigger achieves without any inherited backdoor: the
    larger of the trigger's ASR on the clean reference (``reference_asr``) and the
    student's ``clean_rate`` (the share of untriggered non-target inputs it already puts
    in the target class); ``excess_asr = student_asr - baseline_asr`` grades inheritance.
    """

    student_accuracy: float
    teacher_accuracy: float
    teacher_asr: float | None
    student_asr: float | None
    clean_rate: float | None
    reference_asr: float | None
    reference_accuracy: float | None
    baseline_asr: float | None
    excess_asr: float | None
    target_class: int | None
    adversarial_transfer_rate: float
    adversarial_transfer_reason: str
    weight_divergence: float
    feature_divergence: float
    trigger_source: str  # "given", "teacher scan (<method>)" or "none"
    trigger_note: str
    robust_accuracy: float | None = None  # the student's, under the audit's PGD (white-box)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def measured(self) -> bool:
        """Whether a trigger was known, so inheritance was measured."""
        return self.excess_asr is not None


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


@dataclass(frozen=True)
class AdversarialTransfer:
    """Of ``fooled_teacher`` PGD examples that fool the teacher, the share ``rate`` that fool
    the student; ``reason`` says how it was measured, or why it is 0.0 (nothing to transfer)."""

    rate: float
    reason: str
    candidates: int  # inputs both models classify correctly, the examples' starting points
    fooled_teacher: int


def adversarial_transfer_rate(
    teacher: Any,
    student: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    seed: int,
) -> AdversarialTransfer:
    """Of the PGD examples that fool the teacher, the fraction that fool the student.

    Crafted on the inputs both models classify correctly. When no example fools the
    teacher there is nothing that could transfer: the rate is 0.0 and the reason says so.
    """
    from mlwarden.attacks.evasion import PGD

    both = (teacher.predict(x).cpu() == y) & (student.predict(x).cpu() == y)
    candidates = int(both.sum())
    if candidates == 0:
        return AdversarialTransfer(
            0.0,
            f"none of the {len(x)} audit inputs is classified correctly by both teacher and "
            "student, so no adversarial example could be crafted to transfer",
            0,
            0,
        )
    xs, ys = x[both], y[both]
    result = PGD(eps, steps=steps, seed=seed)(teacher, xs, ys)
    fooled_teacher = result.success.cpu()
    n_fooled = int(fooled_teacher.sum())
    if n_fooled == 0:
        return AdversarialTransfer(
            0.0,
            f"PGD (L-inf eps {eps:g}, {steps} steps) fooled the teacher on none of the "
            f"{candidates} inputs both models classify correctly: nothing to transfer",
            candidates,
            0,
        )
    fooled_student = student.predict(result.x_adv[fooled_teacher]).cpu() != ys[fooled_teacher]
    n_transfer = int(fooled_student.sum())
    return AdversarialTransfer(
        n_transfer / n_fooled,
        f"{n_transfer} of the {n_fooled} PGD examples (L-inf eps {eps:g}, {steps} steps) that "
        f"fool the teacher also fool the student ({candidates} inputs both classify correctly)",
        candidates,
        n_fooled,
    )


def audit_transfer(
    teacher: Any,
    student: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    trigger: Any | None = None,
    target: int | None = None,
    known: KnownTrigger | None = None,
    reference: Any | None = None,
    eps: float = 0.1,
    pgd_steps: int = 20,
    max_samples: int = 400,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> TransferAudit:
    """Measure (a) backdoor ASR on the student against its baseline, (b) adversarial
    transferability, (c) divergence, on at most ``max_samples`` of ``(x, y)``.

    The trigger is ``known`` (from `teacher_trigger` or `trigger_from_file`), or
    ``trigger`` and ``target`` directly; with neither, (a) is not measured. The baseline
    is the trigger's ASR on ``reference`` (a clean model, `reference_model`) or, without
    one, the student's clean rate alone.
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
    if known is not None and trigger is not None:
        raise ParameterError("give the trigger as known or as trigger and target, not both")
    if trigger is not None:
        known = given_trigger(trigger, int(target or 0))
    if known is None:
        known = KnownTrigger(None, None, "none", "no trigger was given and none was searched")
    x, y = x[:max_samples], y[:max_samples]
    teacher_asr = student_asr = clean_rate = reference_asr = reference_acc = None
    baseline = excess = None
    if known.known:
        trig, tgt = known.trigger, int(known.target or 0)
        assert trig is not None  # known.known
        teacher_asr = attack_success_rate(teacher, x, y, trig, tgt)
        student_asr = attack_success_rate(student, x, y, trig, tgt)
        keep = y != tgt
        clean_rate = float((student.predict(x[keep]).cpu() == tgt).float().mean())
        baseline = clean_rate
        if reference is not None:
            reference_asr = attack_success_rate(reference, x, y, trig, tgt)
            reference_acc = reference.accuracy(x, y)
            baseline = max(baseline, reference_asr)
        excess = student_asr - baseline
    transfer = adversarial_transfer_rate(
        teacher, student, x, y, eps=eps, steps=pgd_steps, seed=seed
    )
    from mlwarden.attacks.evasion import PGD

    robust = PGD(eps, steps=pgd_steps, seed=seed)(student, x, y).robust_accuracy
    return TransferAudit(
        student_accuracy=student.accuracy(x, y),
        teacher_accuracy=teacher.accuracy(x, y),
        teacher_asr=teacher_asr,
        student_asr=student_asr,
        clean_rate=clean_rate,
        reference_asr=reference_asr,
        reference_accuracy=reference_acc,
        baseline_asr=baseline,
        excess_asr=excess,
        target_class=known.target,
        adversarial_transfer_rate=transfer.rate,
        adversarial_transfer_reason=transfer.reason,
        weight_divergence=weight_divergence(teacher.module, student.module),
        feature_divergence=feature_divergence(teacher, student, x),
        trigger_source=known.source,
        trigger_note=known.note,
        robust_accuracy=robust,
    )


def inherits_backdoor(audit: Any, margin: float = INHERITANCE_MARGIN) -> bool:
    """True when the student's ASR exceeds its baseline by more than ``margin``."""
    return audit.excess_asr is not None and audit.excess_asr > margin


def inheritance_severity(audit: Any) -> Severity | None:
    """HIGH from an excess ASR of `INHERITANCE_HIGH`, MEDIUM above `INHERITANCE_MARGIN`."""
    if not inherits_backdoor(audit):
        return None
    assert audit.excess_asr is not None
    return Severity.HIGH if audit.excess_asr >= INHERITANCE_HIGH else Severity.MEDIUM


def _asr_phrase(audit: TransferAudit) -> str:
    ref = (
        f"reference from scratch {audit.reference_asr:.2f}, "
        if audit.reference_asr is not None
        else ""
    )
    return (
        f"ASR {audit.student_asr:.2f} vs baseline {audit.baseline_asr:.2f} ({ref}clean rate "
        f"{audit.clean_rate:.2f}): excess {audit.excess_asr:+.2f}"
    )


def _fix(strategy: str | None, alternative: str | None) -> str:
    """What to do about an inheriting student: never ``strategy``, the one that made it."""
    if alternative is not None and alternative != strategy:
        fix = f"retrain with strategy '{alternative}', which measured without the backdoor"
    elif strategy:
        fix = (
            f"retrain with a strategy other than '{strategy}' (`--strategy compare` measures "
            "them all)"
        )
    else:
        fix = (
            "retrain it from this teacher another way (`mlwarden transfer --strategy compare` "
            "measures each strategy)"
        )
    return f"Do not deploy it: {fix}, or choose another teacher."


def recommendation(
    audit: TransferAudit, strategy: str | None = None, alternative: str | None = None
) -> str:
    """One paragraph of advice from the audit's numbers.

    It never recommends ``strategy`` (the one that produced the student) when the student
    inherits: ``alternative`` is the best strategy measured without inheritance (from
    ``compare``), else the user is sent to measure the others.
    """
    parts = []
    if inherits_backdoor(audit):
        parts.append(
            f"The student inherits the teacher's backdoor ({_asr_phrase(audit)}). "
            + _fix(strategy, alternative)
        )
    elif audit.measured:
        parts.append(
            f"The teacher's trigger does not work on the student beyond its baseline "
            f"({_asr_phrase(audit)}, at most {INHERITANCE_MARGIN:g})."
        )
    else:
        parts.append(f"Backdoor inheritance was not measured: {audit.trigger_note}.")
    if audit.adversarial_transfer_rate > TRANSFER_ALERT:
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


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _evidence(audit: Any) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in audit.as_dict().items()}


@dataclass(frozen=True)
class InheritanceWording:
    """What the MLW-BKD-030/034 findings say: the tensor and text audits build the same
    findings from the same numbers and differ only in these words."""

    inherits: str
    """The title's verb phrase after "The student (strategy S)"."""
    effect: Callable[[Any], str]
    """The detail's first sentence: what the trigger did to the student, from the audit."""
    unknown: str
    """The title of MLW-BKD-034: inheritance not measured, and why."""
    how_to_measure: Callable[[Any], str]
    """MLW-BKD-034's detail after the trigger note: how to measure it."""


def _tensor_effect(audit: Any) -> str:
    reference = (
        f"the trigger on a reference trained from scratch {audit.reference_asr:.0%}, "
        if audit.reference_asr is not None
        else ""
    )
    return (
        f"the teacher's trigger ({audit.trigger_source}) sends {audit.student_asr:.0%} of "
        f"non-target inputs to class {audit.target_class} on the student; without the backdoor "
        f"it would send {audit.baseline_asr:.0%} (baseline: {reference}clean rate "
        f"{audit.clean_rate:.0%}): excess {audit.excess_asr:.0%}."
    )


TENSOR_WORDING = InheritanceWording(
    inherits="inherits the teacher's backdoor",
    effect=_tensor_effect,
    unknown="Backdoor inheritance not measured: no trigger known",
    how_to_measure=lambda _audit: (
        "Give a known trigger with --trigger FILE --target N (an .npz with 'mask' and "
        "'pattern') to measure it."
    ),
)
"""The wording of the tensor audit's findings."""


def inheritance_finding(
    audit: Any,
    *,
    check: str,
    subject: str,
    strategy: str | None,
    alternative: str | None = None,
    wording: InheritanceWording = TENSOR_WORDING,
) -> Finding | None:
    """MLW-BKD-030 when the student inherits (severity by the excess ASR), else None.

    ``audit`` is a `TransferAudit` or a text audit: anything with ``excess_asr`` and
    ``as_dict``; ``wording`` says it in the words of its kind of trigger."""
    severity = inheritance_severity(audit)
    if severity is None:
        return None
    by = f" (strategy {strategy})" if strategy else ""
    return Finding(
        id="MLW-BKD-030",
        severity=severity,
        check=check,
        location=subject,
        title=f"The student{by} {wording.inherits}",
        detail=f"{wording.effect(audit)} {_fix(strategy, alternative)}",
        evidence=_evidence(audit),
        atlas=ATLAS,
        owasp=OWASP,
    )


def not_measured_finding(
    audit: Any, *, check: str, subject: str, wording: InheritanceWording = TENSOR_WORDING
) -> Finding:
    """MLW-BKD-034 (info): no trigger is known, so inheritance was not measured."""
    return Finding(
        id="MLW-BKD-034",
        severity=Severity.INFO,
        check=check,
        location=subject,
        title=wording.unknown,
        detail=f"{audit.trigger_note}. {wording.how_to_measure(audit)}",
        evidence={"trigger_source": audit.trigger_source, "trigger_note": audit.trigger_note},
        atlas=ATLAS,
        owasp=OWASP,
    )


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
    if audit.measured:  # else MLW-BKD-034 says why there are no such figures
        m["transfer.teacher_asr"] = _r(audit.teacher_asr)
        m["transfer.asr"] = _r(audit.student_asr)
        m["transfer.clean_rate"] = _r(audit.clean_rate)
        if audit.reference_asr is not None:
            m["transfer.reference_asr"] = _r(audit.reference_asr)
        m["transfer.baseline_asr"] = _r(audit.baseline_asr)
        m["transfer.excess_asr"] = _r(audit.excess_asr)
        m["transfer.target_class"] = audit.target_class
    m["transfer.adversarial_transfer_rate"] = round(audit.adversarial_transfer_rate, 4)
    if audit.robust_accuracy is not None:
        m["transfer.robust_accuracy"] = round(audit.robust_accuracy, 4)
        report.tables.append(robustness_table({strategy or "student": audit}))
    m["transfer.weight_divergence"] = round(audit.weight_divergence, 4)
    m["transfer.feature_divergence"] = round(audit.feature_divergence, 4)
    m["transfer.trigger_source"] = audit.trigger_source
    if strategy:
        m["transfer.strategy"] = strategy
    evidence = _evidence(audit)
    finding = inheritance_finding(audit, check=check, subject=subject, strategy=strategy)
    if finding is not None:
        report.add(finding)
    elif not audit.measured:
        report.add(not_measured_finding(audit, check=check, subject=subject))
    if audit.adversarial_transfer_rate > TRANSFER_ALERT:
        report.add(
            Finding(
                id="MLW-BKD-031",
                severity=Severity.MEDIUM,
                check=check,
                location=subject,
                title="Adversarial examples crafted on the teacher transfer to the student",
                detail=f"{audit.adversarial_transfer_reason} "
                f"({audit.adversarial_transfer_rate:.0%})",
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


COMPARE_STRATEGIES: tuple[str, ...] = (
    "linear_probe", "last_k", "full", "full_reinit", "fineprune", "adversarial", "trades"
)
"""What ``compare`` trains: every strategy but ``dp``, whose privacy budget is a choice the
user makes (``--strategy dp --epsilon``), not a figure to compare accuracy against."""

COMPARE_COLUMNS = [
    "strategy",
    "clean accuracy",
    "backdoor ASR",
    "baseline ASR",
    "excess ASR",
    "adversarial transfer",
    "weight divergence",
    "feature divergence",
]
"""The columns of the strategy comparison; the baseline and excess are those of the audit."""
_COMPARE_METRICS = (
    "accuracy",
    "asr",
    "baseline_asr",
    "excess_asr",
    "adversarial_transfer_rate",
    "weight_divergence",
    "feature_divergence",
)
"""The metric key (``transfer.<strategy>.<key>``) of each comparison column after the name."""


ROBUST_TABLE = "transfer-robustness"
"""The table of the students' clean and robust accuracy (PGD at the audit's eps)."""


def robustness_table(audits: dict[str, TransferAudit]) -> Table:
    """Clean accuracy beside robust accuracy under the audit's white-box PGD, per student:
    what the ``adversarial`` and ``trades`` strategies buy, and what the others leave."""
    return Table(
        id=ROBUST_TABLE,
        title="Student robustness (white-box PGD on the student at the audit's eps)",
        columns=["strategy", "clean accuracy", "robust accuracy"],
        rows=[
            [name, round(a.student_accuracy, 4), round(a.robust_accuracy, 4)]
            for name, a in audits.items()
            if a.robust_accuracy is not None
        ],
    )


def compare_row(name: str, audit: Any, *extra: float | None) -> list[Any]:
    """One row of `COMPARE_COLUMNS` (then ``extra`` cells) for a tensor or text audit:
    figures that need a trigger, or an adversarial transfer not measured, read `NOT_MEASURED`."""

    def cell(value: float | None) -> float | str:
        return NOT_MEASURED if value is None else round(value, 4)

    return [
        name,
        round(audit.student_accuracy, 4),
        cell(audit.student_asr),
        cell(audit.baseline_asr),
        cell(audit.excess_asr),
        cell(getattr(audit, "adversarial_transfer_rate", None)),
        round(audit.weight_divergence, 4),
        round(audit.feature_divergence, 4),
        *(cell(v) for v in extra),
    ]


def compare_strategies(
    teacher: Any,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    known: KnownTrigger,
    strategies: Sequence[str] = COMPARE_STRATEGIES,
    epochs: int = 10,
    lr: float = 1e-3,
    eps: float = 0.1,
    max_samples: int = 400,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
    report: Report | None = None,
    check: str = "transfer",
    **train_kwargs: Any,
) -> tuple[Report, dict[str, TransferAudit]]:
    """Train one student per strategy, audit each against the same baseline, and tabulate
    them in one `Report`.

    With a known trigger a clean reference is trained from scratch on the same data
    (`reference_model`) and audited too: its row is the baseline's. An inheriting
    strategy's finding recommends the most accurate strategy measured without inheritance.
    """
    from mlwarden.defenses.training.finetune import train_student

    reference = None
    if known.known:
        reference = reference_model(
            teacher, train_x, train_y, epochs=epochs, lr=lr, seed=seed, progress=progress
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
            lr=lr,
            seed=seed,
            progress=progress,
            **train_kwargs,
        ).classifier
        audit = audit_transfer(
            teacher,
            student,
            test_x,
            test_y,
            known=known,
            reference=reference,
            eps=eps,
            max_samples=max_samples,
            seed=seed,
            progress=progress,
        )
        audits[strategy] = audit
        rows.append(compare_row(strategy, audit))
        for key, value in zip(_COMPARE_METRICS, rows[-1][1:], strict=True):
            if value != NOT_MEASURED:  # no trigger: the MLW-BKD-034 note says why
                report.metrics[f"transfer.{strategy}.{key}"] = value
        if audit.robust_accuracy is not None:
            report.metrics[f"transfer.{strategy}.robust_accuracy"] = round(
                audit.robust_accuracy, 4
            )
    if reference is not None:
        ref_audit = audit_transfer(
            teacher,
            reference,
            test_x,
            test_y,
            known=known,
            reference=reference,
            eps=eps,
            max_samples=max_samples,
            seed=seed,
            progress=progress,
        )
        rows.append(compare_row(REFERENCE_ROW, ref_audit))
    if known.known:
        report.metrics["transfer.target_class"] = known.target
    report.metrics["transfer.trigger_source"] = known.source
    report.tables.append(
        Table(
            id="transfer-strategies",
            title="Student strategies compared"
            + ("" if known.known else " (ASR columns n/a: no trigger known, see MLW-BKD-034)"),
            columns=list(COMPARE_COLUMNS),
            rows=rows,
        )
    )
    report.tables.append(robustness_table(audits))
    safe = [s for s in strategies if not inherits_backdoor(audits[s])]
    best = max(safe, key=lambda s: audits[s].student_accuracy) if safe else None
    for strategy in strategies:
        finding = inheritance_finding(
            audits[strategy],
            check=check,
            subject=f"student ({strategy})",
            strategy=strategy,
            alternative=best,
        )
        if finding is not None:
            report.add(finding)
    if not known.known:
        report.add(not_measured_finding(audits[strategies[0]], check=check, subject="students"))
    if best is None:
        advice = "Every strategy tried keeps the backdoor; do not fine-tune from this teacher."
    elif known.known:
        advice = (
            f"Use strategy '{best}': the most accurate student whose excess ASR stays at most "
            f"{INHERITANCE_MARGIN:g} above the baseline."
        )
    else:
        advice = (
            f"Use strategy '{best}': the most accurate student (no trigger is known, so the "
            "choice is by accuracy and the table's transfer and divergence figures alone)."
        )
    report.metrics["transfer.recommended_strategy"] = best
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
    return report, audits


# -- the front door: settings, runner, audit check ---------------------------------------------
TRAINING_SETTINGS = ("strategy", "epochs", "lr", "k", "epsilon", "test_fraction")
"""Settings that shape the student's training; meaningless when the student is given."""


class TransferSettings(CheckConfig):
    """Settings of the transfer audit: ``mlwarden transfer`` flags and ``[checks.transfer]``.

    A text teacher (`mlwarden.evaluation.text_transfer`) trains with `TEXT_EPOCHS` and
    `TEXT_LR` unless ``epochs``/``lr`` are set: a transformer fine-tunes in a few epochs at
    a small learning rate, where the tensor defaults would wreck its weights.
    """

    TEXT_EPOCHS: ClassVar[int] = 3
    TEXT_LR: ClassVar[float] = 1e-4

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
    eps: float = Field(
        0.1,
        gt=0,
        description="L-inf radius of the transferability PGD, of the students' robust "
        "accuracy, and of the training of strategies adversarial and trades",
    )
    samples: int = Field(
        400,
        ge=2,
        validation_alias=AliasChoices("samples", "max_samples"),  # max_samples: older files
        description="audit at most this many samples",
    )
    scan_steps: int | None = Field(
        None, ge=1, description="steps of the teacher trigger scan (default: the detector's)"
    )
    trigger: str | None = Field(
        None,
        description="a known trigger to measure (.npz with 'mask' and 'pattern'), instead of "
        "the teacher scan's; needs target",
    )
    trigger_text: str | None = Field(
        None,
        min_length=1,
        description="text teachers: a phrase inserted at the start of held-out texts, whose "
        "success rate on the student is measured (at target, else at the class it sends "
        "most texts to)",
    )
    target: int | None = Field(None, ge=0, description="target class of the given trigger")
    seed: int | None = Field(None, description="default: the audit seed (--seed on the command)")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from mlwarden.defenses.training.finetune import STUDENT_STRATEGIES
        from mlwarden.defenses.training.text_students import TEXT_ONLY_STRATEGIES

        known = (*STUDENT_STRATEGIES, *TEXT_ONLY_STRATEGIES)
        if value != "compare" and value not in known:
            raise ValueError(f"must be one of {', '.join(known)} or compare, got '{value}'")
        return value

    @model_validator(mode="after")
    def _trigger_with_target(self) -> TransferSettings:
        if self.trigger is not None and self.trigger_text is not None:
            raise ValueError("give trigger (tensor models) or trigger_text (text), not both")
        if (self.trigger is None) != (self.target is None) and self.trigger_text is None:
            # a text trigger may come without a target: a task-agnostic encoder backdoor
            # has none, and the audit measures the class the trigger sends most texts to
            raise ValueError("trigger and target go together: give both or neither")
        return self


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
    """What `run_transfer` did: the audits by strategy (`TransferAudit`, or
    `mlwarden.evaluation.text_transfer.TextTransferAudit` on text), the student it trained
    (single strategy only; a `TextClassifier` on text) and the sizes of the training and
    audit parts of the data."""

    audits: dict[str, Any]
    student: Any | None
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

    ``seed`` is the caller's (``--seed``, the audit's) unless ``settings.seed`` is set. A
    text teacher or text data goes to `mlwarden.evaluation.text_transfer.run_text_transfer`.
    """
    if _is_text(teacher) or _is_text(student) or _is_text_data(data):
        return _text_branch(
            teacher,
            data,
            settings,
            report=report,
            student=student,
            seed=seed,
            subject=subject,
            check=check,
            progress=progress,
        )
    if settings.trigger_text is not None:
        raise ParameterError("trigger_text applies to text teachers; give trigger (.npz) here")
    from mlwarden.defenses.training.text_students import TEXT_ONLY_STRATEGIES

    if settings.strategy in TEXT_ONLY_STRATEGIES:
        raise ParameterError(
            f"strategy {settings.strategy} is for students of a text teacher; tensor teachers "
            "take linear_probe, last_k, full, full_reinit, fineprune or dp"
        )
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
    known = known_trigger(teacher, data, settings, seed=seed, progress=progress)
    report.metrics["transfer.trigger_source"] = known.source
    if student is not None:
        reference = None
        if known.known:  # trained on the audit data: the only data there is (see the docs)
            reference = reference_model(
                teacher,
                data.x,
                data.y,
                epochs=settings.epochs,
                lr=settings.lr,
                seed=seed,
                progress=progress,
            )
        audit = audit_transfer(
            teacher,
            student,
            data.x,
            data.y,
            known=known,
            reference=reference,
            eps=settings.eps,
            max_samples=settings.samples,
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
            known=known,
            epochs=settings.epochs,
            lr=settings.lr,
            eps=settings.eps,
            max_samples=settings.samples,
            seed=seed,
            progress=progress,
            report=report,
            check=check,
            k=settings.k,
            adv_eps=settings.eps,
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
        adv_eps=settings.eps,
        seed=seed,
        progress=progress,
    )
    reference = None
    if known.known:
        reference = reference_model(
            teacher,
            train.x,
            train.y,
            epochs=settings.epochs,
            lr=settings.lr,
            seed=seed,
            progress=progress,
        )
    audit = audit_transfer(
        teacher,
        trained.classifier,
        test.x,
        test.y,
        known=known,
        reference=reference,
        eps=settings.eps,
        max_samples=settings.samples,
        seed=seed,
        progress=progress,
    )
    transfer_report(audit, strategy=settings.strategy, report=report, check=check, subject=subject)
    if "epsilon" in trained.details:  # DP-SGD: the privacy spent by the student
        report.metrics["transfer.dp_epsilon"] = trained.details["epsilon"]
        report.metrics["transfer.dp_delta"] = trained.details["delta"]
        report.headline.append("transfer.dp_epsilon")
    return TransferRun({settings.strategy: audit}, trained.classifier, len(train), len(test))


def _is_text(model: Any) -> bool:
    from mlwarden.core.contract import is_model, offers

    return model is not None and is_model(model) and Capability.TEXT_INPUTS in offers(model)


def _is_text_data(data: Any) -> bool:
    from mlwarden.io.text_data import TextDataset

    return isinstance(data, TextDataset)


def _text_branch(teacher: Any, data: Any, settings: TransferSettings, **kw: Any) -> TransferRun:
    """The text path, after refusing a mix of text and tensors in one line."""
    from mlwarden.core.contract import describe

    for role, model in (("teacher", teacher), ("student", kw.get("student"))):
        if model is not None and not _is_text(model):
            what = "labelled text" if _is_text_data(data) else "a text teacher"
            raise ParameterError(
                f"the {role} {describe(model)} (tensor inputs), but the transfer has {what}; "
                "give a Hugging Face model folder as teacher with text data, or a tensor "
                "model with tensor data"
            )
    if not _is_text_data(data):
        raise DataError(
            f"the teacher {describe(teacher)}; its data must be labelled text (.jsonl, .csv, "
            f".tsv), not {type(data).__name__}"
        )
    from mlwarden.evaluation.text_transfer import run_text_transfer

    return run_text_transfer(teacher, data, settings, **kw)


def known_trigger(
    teacher: Any,
    data: Dataset,
    settings: TransferSettings,
    *,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> KnownTrigger:
    """The user's trigger (``settings.trigger``/``target``), else the teacher scan's on all
    of ``data`` (`teacher_trigger`), else none."""
    if settings.trigger is not None and settings.target is not None:
        return trigger_from_file(settings.trigger, settings.target, teacher.spec)
    return teacher_trigger(teacher, data, steps=settings.scan_steps, seed=seed, progress=progress)


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
            text = _is_text(student)
            if not text:
                require_student(student)  # before loading the teacher
            teacher = load_model(
                ctx.resolve(cfg.teacher),  # type: ignore[arg-type]
                factory=cfg.teacher_factory,
                spec=None if text else student.spec,  # a model folder is its own spec
                device=ctx.device,
                allow=ctx.allow_imports,
            )
        if not (_is_text(teacher) or _is_text(student)):
            require_teacher(teacher, trains=student is None)
    except ParameterError as exc:
        raise CheckSkipped(str(exc)) from None
    if cfg.trigger is not None:  # relative to the configuration file, as teacher is
        cfg = cfg.model_copy(update={"trigger": str(ctx.resolve(cfg.trigger))})
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
