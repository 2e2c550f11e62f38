"""The ``risk`` audit check: the threat register, with controls verified by the audit itself.

Registered with a high cost so that it runs after every other check and can read
their results from ``ctx.report``. Its findings carry the residual severity of each
threat (see `mlwarden.risk.verification.residual_severity`), so an audit fails on
a threat whose control failed, not merely because the threat exists.
"""

from __future__ import annotations

from pydantic import Field

from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.findings import Severity


class RiskCheck(CheckConfig):
    """Settings of ``[checks.risk]``."""

    answers: str = Field(description="questionnaire answers YAML (relative to mlwarden.toml)")
    rules: str | None = Field(None, description="custom rules YAML (default: the shipped rules)")
    fail_severity: Severity = Field(
        Severity.MEDIUM,
        description="a verifying check's finding at or above this marks its control failed",
    )
    unverified_severity: Severity = Field(
        Severity.LOW,
        description="highest severity of a threat whose controls are not all checked yet",
    )


def _resolve(ctx: AuditContext, path: str) -> str:
    resolve = getattr(ctx, "resolve", None)
    return resolve(path) if callable(resolve) else path


@register_check("risk", RiskCheck, title="Threat model and control verification", cost=1000)
def risk_check(ctx: AuditContext, cfg: RiskCheck) -> None:
    from mlwarden.risk.engine import assess
    from mlwarden.risk.questionnaire import load_answers
    from mlwarden.risk.register import add_threat_model
    from mlwarden.risk.rules import load_rules
    from mlwarden.risk.verification import mark_controls

    answers_path = _resolve(ctx, cfg.answers)
    answers = load_answers(answers_path)
    rules = load_rules(_resolve(ctx, cfg.rules)) if cfg.rules else None
    model = assess(answers, rules)
    mark_controls(model, ctx.report.checks, ctx.report.findings, cfg.fail_severity)
    add_threat_model(
        ctx.report, model, location=cfg.answers, audited=True, unverified=cfg.unverified_severity
    )
