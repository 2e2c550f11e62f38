"""Audit check ``evasion``: robust accuracy curve (and optional sanity checks).

Configured under ``[checks.evasion]`` in ``mlwarden.toml``::

    [checks.evasion]
    preset = "standard"          # pgd (default, quick) | fast | standard | thorough | blackbox
    norm = "linf"
    eps = [0.03, 0.1]
    samples = 500
    min_robust_accuracy = 0.3    # HIGH finding below this at the largest eps
    sanity = true                # gradient-masking checks (Carlini et al. 2019)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mlwarden.audit.registry import AuditContext, CheckConfig, CheckSkipped, register_check


class EvasionCheck(CheckConfig):
    """Settings of the evasion (adversarial robustness) check."""

    preset: Literal["pgd", "fast", "standard", "thorough", "blackbox"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.03, 0.1], min_length=1)
    steps: int | None = Field(None, ge=1, description="steps per attack; preset default if unset")
    queries: int | None = Field(None, ge=1, description="Square query budget")
    samples: int = Field(500, ge=1, description="evaluate at most this many samples")
    min_robust_accuracy: float | None = Field(
        0.3, ge=0.0, le=1.0, description="HIGH finding below this at the largest eps"
    )
    sanity: bool = False
    seed: int | None = Field(None, description="defaults to the audit seed")

    @field_validator("eps")
    @classmethod
    def _positive_eps(cls, v: list[float]) -> list[float]:
        for e in v:
            if not (e == e) or e < 0 or e == float("inf"):
                raise ValueError(f"eps values must be finite and >= 0, got {e}")
        return v


@register_check("evasion", EvasionCheck, title="Adversarial robustness (evasion)", cost=60)
def evasion_check(ctx: AuditContext, cfg: EvasionCheck) -> None:
    """Robust accuracy at each eps with the configured preset, into ``ctx.report``."""
    from mlwarden.evaluation.robustness import evaluate_robustness

    if cfg.preset == "blackbox":
        model = ctx.oracle
    else:
        model = ctx.classifier  # raises CheckSkipped for query-only models
    data = ctx.data.take(cfg.samples)
    seed = ctx.seed if cfg.seed is None else cfg.seed
    try:
        result = evaluate_robustness(
            model,
            data.x,
            data.y,
            cfg.eps,
            preset=cfg.preset,
            norm=cfg.norm,
            steps=cfg.steps,
            queries=cfg.queries,
            seed=seed,
            batch_size=ctx.batch_size,
            progress=ctx.progress,
        )
    except ImportError as exc:  # e.g. the Square attack module is absent
        raise CheckSkipped(f"evasion preset '{cfg.preset}' unavailable: {exc}") from exc
    result.to_report(ctx.report, min_robust_accuracy=cfg.min_robust_accuracy)
    if cfg.sanity and cfg.preset != "blackbox":
        from mlwarden.evaluation.sanity import run_sanity_checks

        run_sanity_checks(
            model,
            data.x,
            data.y,
            cfg.eps,
            norm=cfg.norm,
            steps=cfg.steps or 20,
            seed=seed,
            batch_size=ctx.batch_size,
            progress=ctx.progress,
        ).to_report(ctx.report)
