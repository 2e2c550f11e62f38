"""The ``backdoor`` audit check: model-level trigger reverse-engineering on the audit data.

Configured by `BackdoorSettings` under ``[checks.backdoor]`` (``methods``, ``threshold``,
``steps``, ``samples``, ``seed``), the same settings ``mlwarden backdoor detect`` takes
as flags; both run `run_backdoor_scan`. The audit data must be clean (it is what the
triggers are optimised on). A model that cannot serve the detectors (an ONNX score
oracle has no gradients) skips the check with the contract's reason.
"""

from __future__ import annotations

from mlwarden.audit.registry import AuditContext, CheckSkipped, register_check
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.detection.model_scan import (
    DETECTORS,
    BackdoorSettings,
    require_detectors,
    run_backdoor_scan,
)


@register_check(
    "backdoor", BackdoorSettings, title="Backdoor detection (trigger reverse-engineering)", cost=70
)
def backdoor_check(ctx: AuditContext, cfg: BackdoorSettings) -> None:
    model = ctx.model
    try:
        require_detectors(model, (DETECTORS[m] for m in cfg.methods))
    except ParameterError as exc:
        raise CheckSkipped(str(exc)) from None
    run_backdoor_scan(
        model,
        ctx.data,
        cfg,
        report=ctx.report,
        seed=ctx.seed,
        subject=str(ctx.model_source),
        progress=ctx.progress,
    )
