"""``mlwarden federated simulate``: a federation under attack, one run per strategy.

A thin adapter: the flags given override `FederatedSettings`, whose defaults the
``federated`` audit check shares, and `run_federated` does the work for both.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import (
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
)

federated_app = typer.Typer(
    help="Federated learning under malicious clients (Flower).", no_args_is_help=True
)


@federated_app.command("simulate")
def simulate(
    model: str | None = typer.Option(None, "--model", "-m", help="Architecture: mlp or small_cnn."),
    data: str | None = typer.Option(
        None, "--data", "-d", help="digits, breast_cancer, or a data file (.npz, .csv, ...)."
    ),
    clients: int | None = typer.Option(None, "--clients", help="Number of clients (20)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Federated rounds (20)."),
    partition: str | None = typer.Option(
        None, "--partition", help="iid (default) or dirichlet:ALPHA."
    ),
    strategy: list[str] = typer.Option(
        [],
        "--strategy",
        "-s",
        help="fedavg, krum, multikrum, median, trimmed, bulyan, clip, dp, secagg; "
        "repeat or comma-separate to compare; 'compare' runs all.",
    ),
    malicious: float | None = typer.Option(
        None, "--malicious", help="Fraction of malicious clients in [0, 1) (0)."
    ),
    attack: str | None = typer.Option(
        None,
        "--attack",
        help="none, label_flip, sign_flip, scaled, backdoor (default), stealthy_backdoor.",
    ),
    boost: float | None = typer.Option(
        None, "--boost", help="Update boost gamma (default: clients/malicious for backdoors)."
    ),
    target: int | None = typer.Option(None, "--target", help="Backdoor target class (0)."),
    local_epochs: int | None = typer.Option(None, "--local-epochs", help="Local epochs (2)."),
    lr: float | None = typer.Option(None, "--lr", help="Local SGD learning rate (0.3)."),
    trim_beta: float | None = typer.Option(None, "--trim-beta", help="trimmed: cut per side."),
    clip_norm: float | None = typer.Option(
        None, "--clip-norm", help="clip: fixed bound (default adaptive); dp: clipping norm (1)."
    ),
    noise_multiplier: float | None = typer.Option(
        None, "--noise-multiplier", help="dp: noise std over clipping norm (0.5)."
    ),
    delta: float | None = typer.Option(None, "--delta", help="dp: delta of epsilon (1e-5)."),
    baseline: bool | None = typer.Option(
        None, "--baseline/--no-baseline", help="Also run attack-free FedAvg (default on)."
    ),
    max_asr: float | None = typer.Option(
        None, "--max-asr", help="A finding when a strategy's final ASR reaches this (0.1)."
    ),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs Ray may use."),
    engine: str | None = typer.Option(
        None,
        "--engine",
        help="auto (default: Ray, in-process if Ray does not start), ray, or inprocess.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for every random choice."),
    save_model: Path | None = typer.Option(
        None,
        "--save-model",
        help="Write the final global model (.pt2); several strategies: NAME-STRATEGY.pt2 each.",
    ),
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Simulate a federation with Flower, attack it, and compare the aggregators."""
    from mlwarden.cli.common import emit_report
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.defenses.federated.check import federated_report, save_global_models
    from mlwarden.defenses.federated.settings import FederatedSettings
    from mlwarden.defenses.federated.simulation import run_federated

    settings = settings_from_flags(
        FederatedSettings,
        {
            "model": model,
            "data": data,
            "clients": clients,
            "rounds": rounds,
            "partition": partition,
            "strategies": strategy,
            "malicious": malicious,
            "attack": attack,
            "boost": boost,
            "target": target,
            "local_epochs": local_epochs,
            "lr": lr,
            "trim_beta": trim_beta,
            "clip_norm": clip_norm,
            "noise_multiplier": noise_multiplier,
            "delta": delta,
            "baseline": baseline,
            "max_asr": max_asr,
            "num_cpus": num_cpus,
            "engine": engine,
            "seed": seed,
        },
        names={"strategies": "--strategy"},
    )
    with progress_bars(progress) as bar:
        result = run_federated(settings, progress=bar)
    report = federated_report(result)
    if save_model is not None:
        saved = save_global_models(result, save_model)
        report.subject["federated_models"] = {k: str(v) for k, v in saved.items()}
    raise typer.Exit(emit_report(report, fmt, output, fail_on))
