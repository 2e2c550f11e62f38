"""``mlwarden audit``: run the checks of ``mlwarden.toml`` and write one report."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    FactoryOption,
    FailOnOption,
    ProgressOption,
    SpecOption,
    fail_threshold,
)


def audit_command(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Configuration file (default: ./mlwarden.toml if present)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model file (.pt2, .onnx, weights) or Hugging Face folder."
    ),
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Evaluation data (.npz, .npy, .csv, image folder, digits, ...; "
        ".jsonl/.csv/.tsv text for a text model).",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use the first N samples."),
    check: list[str] = typer.Option(
        [], "--check", help="Run only this check (repeatable): accuracy, scan, evasion, ..."
    ),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Report folder."),
    formats: list[str] = typer.Option(
        [], "--format", "-f", help="Report formats to write (repeatable): html json sarif junit md."
    ),
    fail_on: str | None = typer.Option(None, "--fail-on", help=FailOnOption.help),
    seed: int | None = typer.Option(None, "--seed", help="Seed for every random choice."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto."),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="auto|ADDRESS",
        help="Run the evasion check in shards on a Ray cluster: auto (join or start one on "
        "this machine), local, HOST:PORT or ray://HOST:PORT (extra 'distributed').",
    ),
    shard_size: int | None = typer.Option(
        None, "--shard-size", min=1, help="Samples per Ray task (default 128)."
    ),
    progress: bool = ProgressOption,
) -> None:
    """Run the configured checks and write the report (HTML, JSON, SARIF, JUnit, Markdown)."""
    from mlwarden.audit.runner import run_audit
    from mlwarden.cli.ui import console, print_verdict, progress_bars
    from mlwarden.config import (
        AuditSection,
        DataSection,
        MlwardenConfig,
        ModelSection,
        find_config,
        load_config,
        read_spec_file,
    )
    from mlwarden.core.errors import ConfigError
    from mlwarden.report import print_report

    config = find_config(config)
    cfg = load_config(config) if config is not None else MlwardenConfig()
    # Flags override the file; paths given on the command line are relative to the cwd.
    if model is not None:
        cfg.model = ModelSection(
            path=str(Path(model).resolve()),
            factory=factory,
            device=device or (cfg.model.device if cfg.model else "auto"),
        )
    elif factory is not None:
        if cfg.model is None:
            raise ConfigError("--factory needs a model weights file (--model)")
        cfg.model.factory = factory
    if device is not None and cfg.model is not None:
        cfg.model.device = device
    if spec is not None:
        cfg.spec = read_spec_file(spec)
    if data is not None:
        from mlwarden.io.dataset import BUILTIN
        from mlwarden.io.text_builtin import BUILTIN_TEXT

        builtin = data in BUILTIN or data in BUILTIN_TEXT
        source = data if builtin and not Path(data).exists() else str(Path(data).resolve())
        cfg.data = DataSection(
            source=source,
            limit=limit,
            label_column=cfg.data.label_column if cfg.data else "label",
            text_column=cfg.data.text_column if cfg.data else "text",
        )
    elif limit is not None and cfg.data is not None:
        cfg.data.limit = limit
    updates: dict[str, object] = {}
    if output_dir is not None:
        updates["output_dir"] = str(output_dir.resolve())
    if formats:
        updates["formats"] = formats
    if fail_on is not None:
        fail_threshold(fail_on)
        updates["fail_on"] = fail_on.strip().lower()
    if seed is not None:
        updates["seed"] = seed
    if ray is not None:
        updates["ray"] = ray
    if shard_size is not None:
        updates["shard_size"] = shard_size
    if updates:
        from pydantic import ValidationError

        from mlwarden.config import format_validation_error

        try:
            cfg.audit = AuditSection.model_validate({**cfg.audit.model_dump(), **updates})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "command line")) from None
    if cfg.model is None:
        raise ConfigError("no model to audit: pass --model or set [model] path in mlwarden.toml")

    from mlwarden.supplychain.signing import policy_from_config, using_policy

    # the [supplychain] policy of --config applies to the audit's model loads too
    with using_policy(policy_from_config(config) if config is not None else None):
        with progress_bars(progress) as bar:
            outcome = run_audit(cfg, only=check or None, progress=bar)
    print_report(outcome.report, console)
    for fmt, path in outcome.files.items():
        console.print(f"[bold]{fmt:>5}[/] report: {path}", highlight=False)
    raise typer.Exit(print_verdict(outcome.report))
