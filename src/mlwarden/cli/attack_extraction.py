"""``mlwarden attack extraction``: steal a copy of a model through its query interface.

A thin adapter: the flags given override `ExtractionSettings`, whose defaults the
``extraction`` audit check shares, and `run_extraction` does the work for both.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    AllowOption,
    ConfigOption,
    DeviceOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SpecOption,
)


def extraction_command(
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="In-domain data: half is the attacker's query pool, half is held out to score "
        "the copy.",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="A local model file (or Hugging Face folder) to attack."
    ),
    queries: str | None = typer.Option(
        None,
        "--queries",
        help="Text models: the thief's own texts (.jsonl/.csv/.tsv, labels "
        "not read). Default: the pool half of --data.",
    ),
    encoder: str | None = typer.Option(
        None,
        "--encoder",
        help="Text models: the thief's sentence-encoder folder (required), e.g. all-MiniLM-L6-v2.",
    ),
    text_column: str = typer.Option(
        "text", "--text-column", help="Text models: the column that holds the text."
    ),
    factory: str | None = FactoryOption,
    url: str | None = typer.Option(None, "--url", help="Attack an mlwarden gateway at this URL."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="MLWARDEN_API_KEY", help="Gateway API key (or MLWARDEN_API_KEY)."
    ),
    spec_file: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    budget: int | None = typer.Option(None, "--budget", help="Query budget (samples)."),
    strategy: str | None = typer.Option(
        None, "--strategy", help="random, natural (default) or synthetic."
    ),
    access: str | None = typer.Option(
        None, "--access", help="scores (default) or labels: what the thief sees."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs of the copy."),
    max_agreement: float | None = typer.Option(
        None, "--max-agreement", help="A finding when the copy's agreement reaches this."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for every random choice."),
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    save_copy: Path | None = typer.Option(
        None, "--save-copy", help="Write the stolen copy (.pt2)."
    ),
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Knockoff extraction: agreement of a stolen copy against the queries it cost."""
    from mlwarden.cli.common import emit_report, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.extraction import ExtractionSettings, run_extraction
    from mlwarden.io.data import load_data

    if (model is None) == (url is None):
        raise ConfigError("give exactly one target: --model FILE or --url URL")
    settings = settings_from_flags(
        ExtractionSettings,
        {
            "budget": budget,
            "strategy": strategy,
            "access": access,
            "epochs": epochs,
            "max_agreement": max_agreement,
            "seed": seed,
            "queries": queries,
            "encoder": encoder,
        },
    )
    if url is not None and (queries is not None or encoder is not None):
        raise ConfigError(
            "--queries and --encoder attack a text model, which --url cannot reach yet; "
            "attack the local folder with --model"
        )
    thief: list[str] | None = None
    thief_encoder = None
    if url is not None:
        from mlwarden.config import resolve_spec
        from mlwarden.gateway.client import HttpOracle

        override = resolve_spec(spec_file, config)
        if override is None:
            raise ConfigError(
                "--url needs the model's input spec: --spec FILE.json or [spec] in mlwarden.toml"
            )
        output_kind = "labels" if settings.access == "labels" else "probabilities"
        target = HttpOracle(url, api_key, override, output=output_kind)
        dataset = load_data(data, spec=override)
    else:
        target, dataset = load_subject(
            model,  # type: ignore[arg-type]  # exactly one of model and url is given
            data,
            factory=factory,
            spec=spec_file,
            config=config,
            device=device,
            allow=allow,
            text=True,
            text_column=text_column,
        )
        from mlwarden.core.contract import takes_text

        if takes_text(target):
            if save_copy is not None:
                raise ConfigError(
                    "--save-copy writes a tensor copy (.pt2); the copy of a text model is the "
                    "thief's encoder plus a head and is not saved yet"
                )
            from mlwarden.evaluation.extraction import thief_means

            thief, thief_encoder = thief_means(
                settings, device=device, text_column=text_column, allow=tuple(allow)
            )
        elif queries is not None or encoder is not None:
            raise ConfigError("--queries and --encoder apply to text models only")
    report = Report(
        title="mlwarden model-extraction stress test",
        subject={
            "model": model or url,
            "data": data,
            "budget": settings.budget,
            "seed": settings.seed,
        },
    )
    with progress_bars(progress) as bar:
        result = run_extraction(
            target, dataset, settings, report, queries=thief, encoder=thief_encoder, progress=bar
        )
    if save_copy is not None:
        from mlwarden.io.export import save_pt2

        save_pt2(result.copy, save_copy)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
