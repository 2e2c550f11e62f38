"""The ``scan`` audit check: the supply-chain scan of the model files as part of an audit."""

from __future__ import annotations

from pydantic import Field

from mlwarden.audit.registry import AuditContext, CheckConfig, CheckSkipped, register_check


class ScanCheck(CheckConfig):
    """Scan model files (default: the audited model file) for code execution and corruption."""

    allow: list[str] = Field(default_factory=list, description="reviewed imports 'module.name'")
    paths: list[str] = Field(
        default_factory=list, description="files or folders; default: the model"
    )


@register_check("scan", ScanCheck, title="Model-file supply-chain scan", cost=0)
def scan_check(ctx: AuditContext, cfg: ScanCheck) -> None:
    from mlwarden.supplychain.scanner import scan_path

    paths = [ctx.resolve(p) for p in cfg.paths] or ([ctx.model_source] if ctx.model_source else [])
    if not paths:
        raise CheckSkipped("no model file to scan: set [model] path or [checks.scan] paths")
    allow = [*cfg.allow, *ctx.allow_imports]
    result = scan_path(paths, allow=allow, progress=ctx.progress)
    result.add_to_report(ctx.report)
