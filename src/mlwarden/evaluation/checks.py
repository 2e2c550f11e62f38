"""Audit check ``evasion``: the robustness evaluation of ``mlwarden evaluate robustness``.

``[checks.evasion]`` in ``mlwarden.toml`` is `RobustnessSettings` (the same settings and
defaults as the command) and the check calls the same runner::

    [checks.evasion]
    preset = "standard"          # pgd | fast | standard (default) | thorough | blackbox | labels
    norm = "linf"
    eps = [0.03, 0.1]
    samples = 500
    min_robust_accuracy = 0.3    # HIGH finding below this at the largest eps
    sanity = false               # gradient-masking checks (Carlini et al. 2019)

With ``mlwarden audit --ray`` the attacks run in shards on the cluster
(`mlwarden.audit.distributed`) and merge into the same result.

A preset the model cannot serve (a white-box preset on an ONNX oracle) skips the check
with the requirement message, so the other checks of the audit still run.
"""

from __future__ import annotations

from mlwarden.audit.registry import AuditContext, CheckSkipped, register_check
from mlwarden.core.errors import ParameterError
from mlwarden.evaluation.evasion import RobustnessSettings, require_robustness, run_robustness


@register_check("evasion", RobustnessSettings, title="Adversarial robustness (evasion)", cost=60)
def evasion_check(ctx: AuditContext, cfg: RobustnessSettings) -> None:
    """Robust accuracy at each eps with the configured preset, into ``ctx.report``."""
    model = ctx.model
    try:
        require_robustness(model, cfg)
    except ParameterError as exc:
        raise CheckSkipped(str(exc)) from None
    run_robustness(
        model,
        ctx.data,
        cfg,
        ctx.report,
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        progress=ctx.progress,
        executor=ctx.executor,
        shard_size=ctx.shard_size,
    )
