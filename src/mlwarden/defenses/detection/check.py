"""The ``backdoor`` audit check: model-level trigger reverse-engineering on the audit data.

Config under ``[checks.backdoor]``: ``methods``, ``threshold``, ``steps``, ``max_samples``.
The audit data must be clean (it is what the triggers are optimised on).
"""

from __future__ import annotations

from pydantic import Field

from mlwarden.audit.registry import AuditContext, CheckConfig, register_check


class BackdoorCheck(CheckConfig):
    """Neural Cleanse and the universal-perturbation scan on the model under audit."""

    methods: list[str] = Field(
        default_factory=lambda: ["neural_cleanse", "universal_perturbation"],
        description="detectors to run",
    )
    threshold: float = Field(2.0, gt=0, description="anomaly index above which a class is flagged")
    steps: int | None = Field(None, gt=0, description="optimisation steps per method")
    max_samples: int = Field(500, gt=1, description="clean samples used")


@register_check(
    "backdoor", BackdoorCheck, title="Backdoor detection (trigger reverse-engineering)", cost=70
)
def backdoor_check(ctx: AuditContext, cfg: BackdoorCheck) -> None:
    from mlwarden.defenses.detection.model_scan import backdoor_report, scan_model

    classifier = ctx.classifier
    data = ctx.data
    scans = scan_model(
        classifier,
        data.x,
        data.y,
        methods=cfg.methods,
        threshold=cfg.threshold,
        steps=cfg.steps,
        max_samples=cfg.max_samples,
        seed=ctx.seed,
        progress=ctx.progress,
    )
    backdoor_report(
        scans, classifier.spec.class_names, report=ctx.report, subject=str(ctx.model_source)
    )
