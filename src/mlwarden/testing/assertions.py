"""Assertion helpers: the gates of ``mlwarden audit`` as one-line pytest assertions.

Each helper measures, raises `AssertionError` with "measured vs required" when the
gate fails, and returns what it measured so that a passing test can log it. Bad
arguments (an unknown attack, a threshold outside [0, 1]) raise `ParameterError`,
not `AssertionError`: a misconfigured test must not read as a model regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.contract import as_classifier, as_oracle
from mlwarden.core.errors import ParameterError
from mlwarden.testing.models import as_dataset, as_model, as_tensors

if TYPE_CHECKING:
    from mlwarden.attacks.base import AttackResult
    from mlwarden.config import MlwardenConfig
    from mlwarden.core.findings import Finding, Report
    from mlwarden.core.spec import SpecInput
    from mlwarden.defenses.detection.result import BackdoorScan
    from mlwarden.supplychain.results import ScanResult

_VERDICTS = ("safe", "suspicious", "unreadable", "unsafe")
_SEVERITIES = ("info", "low", "medium", "high", "critical")
_MAX_LISTED = 10


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ParameterError(f"{name} must be in [0, 1], got {value}")
    return value


def _listing(findings: Sequence[Finding]) -> str:
    lines = [
        f"  [{f.severity.value}] {f.id}"
        + (f" ({f.check})" if f.check else "")
        + (f" {f.location}" if f.location else "")
        + f": {f.title}"
        + (f" - {f.detail}" if f.detail else "")
        for f in findings[:_MAX_LISTED]
    ]
    if len(findings) > _MAX_LISTED:
        lines.append(f"  ... and {len(findings) - _MAX_LISTED} more")
    return "\n".join(lines)


def assert_accuracy(
    model: Any,
    x: Any,
    y: Any,
    *,
    min_accuracy: float,
    spec: SpecInput | None = None,
    batch_size: int = 256,
) -> float:
    """Clean accuracy of ``model`` on ``(x, y)`` is at least ``min_accuracy``; returns it.

    The baseline every other gate is read against: a robustness number means little
    if clean accuracy has already collapsed.
    """
    import torch

    required = _check_fraction("min_accuracy", min_accuracy)
    target = as_model(model, spec=spec)
    xt, yt = as_tensors(x, y)
    oracle = as_oracle(target, "labels", by="assert_accuracy", batch_size=batch_size)
    oracle.spec.validate_batch(xt, what="x")
    oracle.spec.validate_labels(yt, what="y")
    preds = torch.cat(
        [oracle.labels(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
    )
    correct = int((preds.cpu() == yt).sum())
    accuracy = correct / len(yt)
    if accuracy < required:
        raise AssertionError(
            f"clean accuracy {accuracy:.4f} ({correct}/{len(yt)} correct) "
            f"is below the required {required:.4f}"
        )
    return accuracy


def assert_robust(
    model: Any,
    x: Any,
    y: Any,
    *,
    eps: float,
    min_robust_accuracy: float,
    attack: str = "pgd",
    norm: str = "linf",
    steps: int = 20,
    seed: int = 0,
    restarts: int = 1,
    spec: SpecInput | None = None,
    batch_size: int = 256,
) -> AttackResult:
    """Robust accuracy under ``attack`` at radius ``eps`` is at least ``min_robust_accuracy``.

    Robust accuracy counts a sample as robust only when it is classified correctly
    *and* the attack fails on it (Madry et al., ICLR 2018). Any attack name of
    `mlwarden.attacks.evasion.build_attack` works (``fgsm``, ``pgd``, ``apgd-ce``, ...);
    a gradient-free ``square`` also accepts a black-box model. Returns the
    `AttackResult` (``.robust_accuracy``, ``.x_adv``).
    """
    from mlwarden.attacks.evasion import attack_in_batches, build_attack

    required = _check_fraction("min_robust_accuracy", min_robust_accuracy)
    target = as_model(model, spec=spec)
    name = str(attack).strip().lower()
    if name != "square":
        target = as_classifier(target, by=f"attack '{name}'", hint="use attack='square'")
    built = build_attack(name, eps=eps, norm=norm, steps=steps, seed=seed, restarts=restarts)
    xt, yt = as_tensors(x, y)
    result = attack_in_batches(built, target, xt, yt, batch_size=batch_size)
    robust = result.robust_accuracy
    if robust < required:
        budget = f"{steps} steps" if name not in ("fgsm", "square") else ""
        setting = ", ".join(s for s in (norm, f"eps={eps:g}", budget, f"seed={seed}") if s)
        raise AssertionError(
            f"robust accuracy {robust:.4f} under {name} ({setting}) on {len(yt)} samples "
            f"is below the required {required:.4f} (clean accuracy {result.clean_accuracy:.4f}, "
            f"attack success rate {result.success_rate:.4f})"
        )
    return result


def assert_scan_safe(
    path: str | Path | Sequence[str | Path],
    *,
    allow: Sequence[str] = (),
    fail_on: str = "suspicious",
) -> ScanResult:
    """The model files at ``path`` pass the supply-chain scan; returns the `ScanResult`.

    ``fail_on`` is a verdict (``suspicious``, ``unreadable``, ``unsafe``: fail when the
    worst file is at least that bad) or a finding severity (``info`` .. ``critical``),
    as for ``mlwarden scan --fail-on``. Never imports torch and never unpickles: the
    scanner reads bytes.
    """
    from mlwarden.supplychain import Verdict, scan_path

    threshold = str(fail_on).strip().lower()
    if threshold not in _VERDICTS[1:] + _SEVERITIES:
        raise ParameterError(
            f"fail_on must be one of {', '.join(_VERDICTS[1:] + _SEVERITIES)}, got {fail_on!r}"
        )
    result = scan_path(path, allow=list(allow))  # type: ignore[arg-type]
    findings = result.all_findings()
    if threshold in _VERDICTS:
        failed = result.verdict.rank >= Verdict(threshold).rank
        offending = [f for f in findings if f.severity.value != "info"] or findings
        required = f"every file below '{threshold}'"
    else:
        from mlwarden.core.findings import Severity

        offending = [f for f in findings if f.severity >= Severity(threshold)]
        failed = bool(offending)
        required = f"no finding at or above '{threshold}'"
    if failed:
        files = ", ".join(
            f"{Path(f.path).name}: {f.verdict.value}"
            for f in result.files
            if f.verdict.rank > Verdict.SAFE.rank
        )
        raise AssertionError(
            f"scan verdict '{result.verdict.value}' ({files or 'see findings'}); required "
            f"{required}. Findings:\n{_listing(offending)}"
        )
    return result


def assert_no_membership_leak(
    model: Any,
    members: Any,
    non_members: Any,
    *,
    max_auc: float,
    attacks: Sequence[str] = ("threshold",),
    max_tpr_at_1_fpr: float | None = None,
    spec: SpecInput | None = None,
    seed: int = 0,
    shadow_models: int = 8,
    shadow_epochs: int = 30,
) -> Report:
    """No membership attack tells training records from held-out ones better than allowed.

    ``members``/``non_members`` are `Dataset`s or ``(x, y)`` pairs. Fails when the
    strongest attack's ROC AUC exceeds ``max_auc`` or, if given, its TPR at 1% FPR
    exceeds ``max_tpr_at_1_fpr`` (the low-FPR regime of Carlini et al., "Membership
    Inference Attacks From First Principles", S&P 2022). LiRA attacks
    (``lira-offline``, ``lira-online``) train shadow models and need a white-box model.
    Returns the privacy `Report` (metrics ``privacy.<attack>.auc`` ...).
    """
    from mlwarden.evaluation.privacy import membership_audit

    limit_auc = _check_fraction("max_auc", max_auc)
    limit_tpr = (
        1.0 if max_tpr_at_1_fpr is None else _check_fraction("max_tpr_at_1_fpr", max_tpr_at_1_fpr)
    )
    target = as_model(model, spec=spec)
    names = target.spec.class_names
    member_set = as_dataset(members, names, what="members")
    non_member_set = as_dataset(non_members, names, what="non_members")
    report = membership_audit(
        target,  # type: ignore[arg-type]
        member_set,
        non_member_set,
        attacks=tuple(attacks),
        shadow_models=shadow_models,
        shadow_epochs=shadow_epochs,
        seed=seed,
        max_auc=limit_auc,
        max_tpr_at_1_fpr=limit_tpr,
    )
    measured = {
        name: (
            float(report.metrics[f"privacy.{name}.auc"]),  # type: ignore[arg-type]
            float(report.metrics[f"privacy.{name}.tpr@1%fpr"]),
        )  # type: ignore[arg-type]
        for name in attacks
    }
    worst = max(measured, key=lambda k: measured[k][0])
    auc, tpr = measured[worst]
    too_high_tpr = max_tpr_at_1_fpr is not None and any(t > limit_tpr for _, t in measured.values())
    if auc > limit_auc or too_high_tpr:
        per_attack = "; ".join(
            f"{k}: AUC {a:.4f}, TPR@1%FPR {t:.4f}" for k, (a, t) in measured.items()
        )
        tpr_req = f", TPR@1%FPR <= {limit_tpr:.4f}" if max_tpr_at_1_fpr is not None else ""
        raise AssertionError(
            f"membership leak: strongest attack {worst} reaches AUC {auc:.4f} "
            f"(required <= {limit_auc:.4f}{tpr_req}) on {len(member_set)} members vs "
            f"{len(non_member_set)} non-members [{per_attack}]"
        )
    return report


def assert_no_backdoor(
    model: Any,
    clean_x: Any,
    clean_y: Any,
    *,
    methods: Sequence[str] = ("neural_cleanse",),
    threshold: float | None = None,
    steps: int | None = None,
    max_samples: int | None = 500,
    seed: int = 0,
    spec: SpecInput | None = None,
) -> list[BackdoorScan]:
    """No class of ``model`` has an anomalously small reverse-engineered trigger.

    Runs Neural Cleanse (Wang et al., S&P 2019) and/or the minimum universal
    perturbation (``universal_perturbation``) on a small clean set through
    `mlwarden.defenses.detection.scan_model`, graded as ``mlwarden backdoor detect``
    grades it (`mlwarden.defenses.detection.calibration.assess`): by default each
    detector's size ratio against the cut calibrated on clean models; with ``threshold``,
    the anomaly index (MAD-normalised trigger size, 2 in the paper) against it. Fails on
    a MEDIUM or HIGH assessment, and on a scan that did not converge (it cannot clear the
    model). Returns the per-method `BackdoorScan`s.
    """
    from mlwarden.defenses.detection import scan_model
    from mlwarden.defenses.detection.calibration import assess

    if threshold is not None and not threshold > 0:
        raise ParameterError(f"threshold must be positive, got {threshold}")
    target = as_classifier(as_model(model, spec=spec), by="backdoor detection")
    xt, yt = as_tensors(clean_x, clean_y, what="clean data")
    scans = scan_model(
        target,
        xt,
        yt,
        methods=tuple(methods),
        threshold=threshold,
        steps=steps,
        max_samples=max_samples,
        seed=seed,
    )
    assessment = assess(scans)
    if assessment.detected:
        names = target.spec.class_names
        statistics = "; ".join(
            f"{e.statistic} {e.value:.3f} {'>' if e.over else '<='} "
            f"{'cut' if e.calibrated else 'threshold'} {e.cut:g}"
            + (f" at class {names[e.target]!r}" if e.target is not None else "")
            for e in assessment.evidence
        )
        if assessment.target is None:
            raise AssertionError(
                f"backdoor scan inconclusive ({', '.join(assessment.unconverged)} did not "
                f"converge; raise steps): {statistics}"
            )
        suspect = assessment.target
        raise AssertionError(
            f"backdoor suspected ({assessment.severity.value}): class {names[suspect]!r} "
            f"(index {suspect}) [{statistics}]"
        )
    return scans


def assert_audit_passes(
    config_path_or_config: str | Path | MlwardenConfig | dict[str, Any],
    *,
    fail_on: str = "high",
    only: Sequence[str] | None = None,
) -> Report:
    """The audit an ``mlwarden.toml`` describes has no finding at or above ``fail_on``.

    The same gate as ``mlwarden audit --fail-on`` without writing report files. A
    check that crashed (status ``error``) fails too. Returns the `Report`.
    """
    from mlwarden.audit.runner import run_audit
    from mlwarden.config import MlwardenConfig, load_config, parse_config
    from mlwarden.core.findings import Severity
    from mlwarden.core.verdict import report_verdict

    level = str(fail_on).strip().lower()
    if level not in (*_SEVERITIES, "never"):
        raise ParameterError(
            f"fail_on must be one of {', '.join(_SEVERITIES)}, never; got {fail_on!r}"
        )
    source = config_path_or_config
    if isinstance(source, MlwardenConfig):
        config = source
    elif isinstance(source, dict):
        config = parse_config(source, where="config")
    elif isinstance(source, (str, Path)):
        config = load_config(source)
    else:
        raise ParameterError(
            f"config must be a path, a dict or an MlwardenConfig, got {type(source).__name__}"
        )
    outcome = run_audit(config, only=list(only) if only else None, write=False)
    report = outcome.report
    verdict = report_verdict(report, level)  # the one decision, as `mlwarden audit`'s
    offending = [] if level == "never" else report.at_or_above(Severity(level))
    errored = [c for c in report.checks if c.status == "error"]
    if not verdict.passed or errored:
        ran = ", ".join(f"{c.name}={c.status}" for c in report.checks)
        parts = [
            verdict.line(),
            f"audit has {len(offending)} finding(s) at or above '{level}' (required: none)",
        ]
        if errored:
            parts.append(
                f"{len(errored)} check(s) could not run: "
                + ", ".join(f"{c.name} ({c.summary})" for c in errored)
            )
        raise AssertionError("; ".join(parts) + f"; checks: {ran}\n{_listing(offending)}")
    return report
