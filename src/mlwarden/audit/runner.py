"""Run the configured checks, cheapest first, into one `Report`.

Input problems (a model that cannot be loaded, data of the wrong shape, an unsafe
file) stop the audit with their own exit code: every later check would fail the
same way. A check that crashes on a bug of ours is recorded as ``error`` with a
finding, and the audit goes on, so one broken check never hides the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlwarden.audit.registry import (
    TEXT_NOT_YET,
    AuditContext,
    CheckConfig,
    CheckSkipped,
    NotApplicable,
    check_spec,
)
from mlwarden.config import MlwardenConfig, validate_checks
from mlwarden.core.errors import ConfigError, MlwardenError
from mlwarden.core.findings import CheckResult, CheckStatus, Finding, Report, Severity
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.verdict import check_status, fail_on_name, fail_threshold
from mlwarden.evaluation.shards import DEFAULT_SHARD_SIZE

# Checks that run when a configuration names none.
DEFAULT_CHECKS = ("accuracy", "scan", "evasion")

EXTENSIONS = {"html": "html", "json": "json", "sarif": "sarif", "junit": "xml", "md": "md"}


@dataclass
class AuditOutcome:
    report: Report
    files: dict[str, Path] = field(default_factory=dict)


def selected_checks(config: MlwardenConfig, only: list[str] | None) -> dict[str, CheckConfig]:
    """Configured checks (or the defaults), filtered by ``only``, enabled ones only."""
    checks: dict[str, Any] = dict(config.checks)
    if not checks:
        from mlwarden.audit.registry import available_checks

        known = available_checks()
        checks = validate_checks({name: {} for name in DEFAULT_CHECKS if name in known})
    if only:
        unknown = [name for name in only if name not in checks]
        for name in unknown:
            check_spec(name)  # raises for names no check registered
            checks.update(validate_checks({name: {}}))
        checks = {name: checks[name] for name in only}
    return {name: cfg for name, cfg in checks.items() if cfg.enabled}


def _not_applicable(ctx: AuditContext, exc: CheckSkipped) -> bool:
    """Whether ``exc`` skipped a tensor-only check on a text model (a check that exists but
    is not built for text yet, as opposed to one the model's access rules out)."""
    if isinstance(exc, NotApplicable):
        return True
    from mlwarden.core.contract import Capability

    loaded = ctx._classifier is not None or ctx._oracle is not None
    return loaded and ctx.takes_text and Capability.TENSOR_INPUTS.value in str(exc)


def run_audit(
    config: MlwardenConfig,
    *,
    only: list[str] | None = None,
    progress: ProgressCallback = null_progress,
    write: bool = True,
) -> AuditOutcome:
    """Run the audit described by ``config`` and write the report files it asks for."""
    if config.model is None and config.data is None and not config.checks:
        raise ConfigError("nothing to audit: give a model (--model or [model] path)")
    audit = config.audit
    output_dir = Path(config.resolve(audit.output_dir) or audit.output_dir)
    report = Report(title=audit.title)
    ctx = AuditContext(
        model_source=config.resolve(config.model.path) if config.model else None,
        model_factory=config.model.factory if config.model else None,
        device=config.model.device if config.model else "auto",
        data_source=config.resolve(config.data.source) if config.data else None,
        data_limit=config.data.limit if config.data else None,
        label_column=config.data.label_column if config.data else "label",
        text_column=config.data.text_column if config.data else "text",
        spec_override=config.spec,
        seed=audit.seed,
        batch_size=audit.batch_size,
        output_dir=output_dir,
        base_dir=config.base_dir,
        # Imports reviewed in [checks.scan] allow are accepted by every model load too,
        # not only by the scan check (the load gate runs the same scanner).
        allow_imports=tuple(getattr(config.checks.get("scan"), "allow", ())),
        report=report,
        progress=progress,
    )
    report.subject = {
        "model": config.model.path if config.model else None,
        "data": config.data.source if config.data else None,
        "seed": audit.seed,
    }
    fail_on = fail_threshold(audit.fail_on)
    report.fail_on = fail_on_name(fail_on)
    selected = selected_checks(config, only)
    order = sorted(selected, key=lambda name: check_spec(name).cost)
    with _sharding(config, ctx):
        _run_checks(ctx, order, selected, fail_on, audit.fail_on, progress)
    outcome = AuditOutcome(report)
    if write:
        from mlwarden.report import write_report

        output_dir.mkdir(parents=True, exist_ok=True)
        for fmt in audit.formats:
            path = output_dir / f"report.{EXTENSIONS[fmt]}"
            outcome.files[fmt] = write_report(report, path, fmt)
    return outcome


@contextmanager
def _sharding(config: MlwardenConfig, ctx: AuditContext) -> Iterator[None]:
    """With ``[audit] ray`` set, a Ray executor for the sample-parallel checks, joined before
    the first check (a bad address fails the audit at once) and left after the last."""
    if config.audit.ray is None:
        yield
        return
    from mlwarden.audit.distributed import ModelFiles, RayExecutor

    if ctx.model_source is None:
        raise ConfigError("--ray needs a model file to send to the workers ([model] path)")
    files = ModelFiles.from_source(
        ctx.model_source,
        factory=ctx.model_factory,
        spec=ctx.spec_override,
        device=ctx.device,
        allow=ctx.allow_imports,
    )
    executor = RayExecutor(config.audit.ray).connect()
    try:
        executor.bind(files)
        ctx.executor, ctx.shard_size = executor, config.audit.shard_size
        ctx.report.subject["sharded"] = {
            "engine": executor.engine,
            "address": config.audit.ray,
            "shard_size": ctx.shard_size or DEFAULT_SHARD_SIZE,
        }
        yield
    finally:
        ctx.executor = None
        executor.close()


def _run_checks(
    ctx: AuditContext,
    order: list[str],
    selected: dict[str, CheckConfig],
    fail_on: Severity,
    fail_on_text: str,
    progress: ProgressCallback,
) -> None:
    """Run ``order`` into ``ctx.report``, one `CheckResult` per check."""
    report = ctx.report
    for done, name in enumerate(order):
        progress("audit", done, len(order))
        spec = check_spec(name)
        ctx.check = name
        before = len(report.findings)
        start = time.perf_counter()
        ran: CheckStatus = "passed"
        summary = ""
        try:
            spec.run(ctx, selected[name])
        except CheckSkipped as exc:
            ran, summary = "skipped", str(exc)
            if _not_applicable(ctx, exc):
                summary = summary if TEXT_NOT_YET in summary else f"{summary} ({TEXT_NOT_YET})"
                report.add(
                    Finding(
                        id="MLW-AUDIT-002",
                        title=f"Check '{name}' not applicable to this model: not run",
                        severity=Severity.INFO,
                        detail=summary,
                        check=name,
                        evidence={"check": name, "status": "not applicable"},
                    )
                )
        except MlwardenError:
            raise
        except Exception as exc:  # a bug in a check must not hide the other checks
            ran, summary = "error", f"{type(exc).__name__}: {exc}"
            report.add(
                Finding(
                    id="MLW-AUDIT-001",
                    title=f"Check '{name}' could not run",
                    severity=Severity.HIGH,
                    detail=summary,
                    check=name,
                )
            )
        new = report.findings[before:]
        for finding in new:
            finding.check = finding.check or name
        status = check_status(ran, new, fail_on)
        if status == "passed" and not summary:
            summary = f"{len(new)} finding(s)" if new else "no findings"
        elif status == "failed":
            above = sum(f.severity >= fail_on for f in new)  # type: ignore[operator]
            summary = f"{above} finding(s) at or above {fail_on_text}"
        report.checks.append(
            CheckResult(
                name=name,
                status=status,
                duration_s=round(time.perf_counter() - start, 3),
                summary=summary,
            )
        )
    progress("audit", len(order), len(order))
