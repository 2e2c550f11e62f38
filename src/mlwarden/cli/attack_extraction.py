"""``mlwarden attack extraction``: steal a copy of a model through its query interface."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    ConfigOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SeedOption,
    SpecOption,
)


def extraction_command(
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="In-domain data: half is the attacker's query pool, half is held out to score the copy.",
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="A local model file to attack."),
    factory: str | None = FactoryOption,
    url: str | None = typer.Option(None, "--url", help="Attack an mlwarden gateway at this URL."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="MLWARDEN_API_KEY", help="Gateway API key (or MLWARDEN_API_KEY)."
    ),
    spec_file: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    budget: int = typer.Option(1000, "--budget", help="Query budget (samples)."),
    strategy: str = typer.Option("natural", "--strategy", help="random, natural or synthetic."),
    access: str = typer.Option("scores", "--access", help="scores or labels."),
    epochs: int = typer.Option(30, "--epochs", help="Training epochs of the copy."),
    max_agreement: float = typer.Option(0.9, "--max-agreement", help="Finding at or above this."),
    seed: int = SeedOption,
    save_copy: Path | None = typer.Option(
        None, "--save-copy", help="Write the stolen copy (.pt2)."
    ),
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Knockoff extraction: agreement of a stolen copy against the queries it cost."""
    from mlwarden.attacks.extraction import KnockoffExtraction
    from mlwarden.cli.common import emit_report
    from mlwarden.cli.ui import progress_bars
    from mlwarden.config import resolve_spec
    from mlwarden.core.contract import note_assumptions
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.oracle import ClassifierOracle, LabelOnlyOracle, Oracle
    from mlwarden.evaluation.extraction import extraction_report
    from mlwarden.io.data import load_data

    if (model is None) == (url is None):
        raise ConfigError("give exactly one target: --model FILE or --url URL")
    if access not in ("scores", "labels"):
        raise ConfigError(f"--access must be scores or labels, got '{access}'")
    oracle: Oracle
    override = resolve_spec(spec_file, config)
    if url is not None:
        from mlwarden.gateway.client import HttpOracle

        if override is None:
            raise ConfigError(
                "--url needs the model's input spec: --spec FILE.json or [spec] in mlwarden.toml"
            )
        oracle = HttpOracle(
            url,
            api_key,
            override,
            output="labels" if access == "labels" else "probabilities",
        )
    else:
        from mlwarden.io.models import load_model

        loaded = load_model(model, factory=factory, spec=override)  # type: ignore[arg-type]
        oracle = loaded if isinstance(loaded, Oracle) else ClassifierOracle(loaded)
        if access == "labels":
            oracle = LabelOnlyOracle(oracle)
    dataset = load_data(data, spec=oracle.spec)
    pool, held_out = dataset.split(0.5, seed=seed)
    attack = KnockoffExtraction(budget, strategy, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    eval_labels = oracle.labels(held_out.x).cpu()
    oracle.queries = 0  # scoring the copy is the auditor's work, not the attacker's budget
    with progress_bars(progress) as bar:
        result = attack.extract(
            oracle,
            natural=pool.x,
            eval_x=held_out.x,
            eval_labels=eval_labels,
            eval_y=held_out.y,
            progress=bar,
        )
    report = extraction_report(
        result, strategy=strategy, access=access, max_agreement=max_agreement
    )
    report.title = "mlwarden model-extraction stress test"
    note_assumptions(report, oracle)
    report.subject = {"model": model or url, "data": data, "budget": budget, "seed": seed}
    if save_copy is not None:
        from mlwarden.io.export import save_pt2

        save_pt2(result.copy, save_copy)
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
