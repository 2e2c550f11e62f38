"""The ``federated`` audit check and the report of a simulated federation.

`federated_report` turns a `FederatedResult` into metrics, one table (final accuracy,
backdoor ASR, epsilon, time, bytes per strategy), two figures (accuracy and ASR per
round, one curve per strategy) and a finding for each strategy that let the backdoor
through. `save_global_models` writes each final global model as a ``.pt2`` with its
spec, the format every other check loads.
"""

from __future__ import annotations

from pathlib import Path

from mlwarden.audit.registry import AuditContext, CheckConfig, register_check
from mlwarden.core.findings import Figure, Finding, Report, Series, Severity, Table
from mlwarden.defenses.federated.attacks import BACKDOOR_ATTACKS
from mlwarden.defenses.federated.settings import FederatedSettings
from mlwarden.defenses.federated.simulation import FederatedResult, run_federated


def federated_report(result: FederatedResult) -> Report:
    """Metrics, curves, the comparison table and a finding per strategy the backdoor passes."""
    s = result.settings
    report = Report(title="Federated learning under attack")
    report.subject.update(
        {
            "federation": f"{s.clients} clients x {s.rounds} rounds, {s.model} on {s.data}, "
            f"partition {s.partition}",
            "attackers": f"{s.num_malicious} ({s.attack}) : clients {result.malicious_clients}",
            "engine": "Flower simulation engine (Ray)"
            if result.engine == "ray"
            else "Flower ServerApp/ClientApp on mlwarden's InProcessGrid (Ray did not start)"
            if s.engine == "auto"
            else "Flower ServerApp/ClientApp on mlwarden's InProcessGrid",
        }
    )
    baseline = next((r for r in result.runs if r.attack == "none" and r.strategy == "fedavg"), None)
    rows = []
    for run in result.runs:
        key = f"federated.{run.strategy}" + (".no_attack" if run.attack == "none" else "")
        final = run.final
        report.metrics[f"{key}.accuracy"] = round(final.accuracy, 6)
        report.metrics[f"{key}.asr"] = round(final.asr, 6)
        report.metrics[f"{key}.seconds"] = round(run.seconds, 3)
        report.metrics[f"{key}.bytes_per_round"] = int(run.bytes_per_round)
        if run.epsilon is not None:
            report.metrics[f"{key}.epsilon"] = round(run.epsilon, 4)
        cost = None if baseline is None else round(baseline.final.accuracy - final.accuracy, 4)
        rows.append(
            [
                run.label,
                run.attack,
                round(final.accuracy, 4),
                cost,
                round(final.asr, 4),
                None if run.epsilon is None else f"{run.epsilon:.2f} (delta {s.delta:g})",
                None if run.honest_norm is None else round(run.honest_norm, 3),
                None if run.malicious_norm is None else round(run.malicious_norm, 3),
                round(run.seconds, 1),
                int(run.bytes_per_round),
            ]
        )
        if run.attack in BACKDOOR_ATTACKS and final.asr >= s.max_asr:
            report.add(
                Finding(
                    id="MLW-FED-001",
                    title=f"The backdoor survives aggregation with '{run.strategy}'",
                    severity=Severity.HIGH,
                    detail=(
                        f"{s.num_malicious} of {s.clients} clients planting a trigger "
                        f"({run.attack}) reach an attack success rate of {final.asr:.1%} on the "
                        f"global model after {s.rounds} rounds of '{run.strategy}' (limit "
                        f"{s.max_asr:.0%}). Use a robust aggregator that held in this "
                        "comparison, bound update norms, or both."
                    ),
                    evidence={
                        "strategy": run.strategy,
                        "attack": run.attack,
                        "asr": round(final.asr, 4),
                        "accuracy": round(final.accuracy, 4),
                        "malicious": s.num_malicious,
                        "clients": s.clients,
                    },
                    atlas=["AML.T0020"],
                    owasp=["ML10"],
                    check="federated",
                )
            )
    report.metrics["federated.startup_seconds"] = round(result.startup_seconds, 2)
    report.metrics["federated.wall_seconds"] = round(result.wall_seconds, 2)
    report.metrics["federated.engine"] = result.engine
    report.headline.extend(
        k for k in report.metrics if k.endswith(".asr") or k.endswith(".accuracy")
    )
    report.tables.append(
        Table(
            id="federated-strategies",
            title="Strategies under attack (final round)",
            columns=[
                "strategy",
                "attack",
                "clean accuracy",
                "accuracy cost vs. attack-free FedAvg",
                "backdoor ASR",
                "client-level epsilon",
                "median honest update norm",
                "median malicious update norm",
                "seconds",
                "bytes / round",
            ],
            rows=rows,
        )
    )
    for metric, title in (
        ("accuracy", "Global clean accuracy"),
        ("asr", "Backdoor attack success rate"),
    ):
        report.figures.append(
            Figure(
                id=f"federated-{metric}",
                title=f"{title} per round",
                kind="line",
                x_label="round",
                y_label=metric,
                series=[
                    Series(
                        label=run.label,
                        x=[r.round for r in run.rounds],
                        y=[getattr(r, metric) for r in run.rounds],
                    )
                    for run in result.runs
                ],
                caption="Measured centrally on held-out data after each round; round 0 is "
                "the initial model.",
            )
        )
    return report


def save_global_models(result: FederatedResult, path: Path) -> dict[str, Path]:
    """Write each run's final global model (``.pt2`` with its spec).

    One run: ``path`` itself. Several: ``<stem>-<strategy>.pt2`` beside it, the attack-free
    baseline as ``<stem>-fedavg-no-attack.pt2``.
    """
    from mlwarden.io.export import save_pt2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Path] = {}
    for run in result.runs:
        name = run.strategy + (
            "-no-attack" if run.attack == "none" and len(result.runs) > 1 else ""
        )
        target = path if len(result.runs) == 1 else path.with_name(f"{path.stem}-{name}.pt2")
        saved[run.label] = save_pt2(result.classifier(run), target)
    return saved


class FederatedCheck(CheckConfig, FederatedSettings):
    """``[checks.federated]``: a simulated federation under attack, one run per strategy."""

    save_models: bool = True


@register_check("federated", FederatedCheck, title="Federated learning under attack", cost=90)
def federated_check(ctx: AuditContext, cfg: FederatedCheck) -> None:
    settings = FederatedSettings.model_validate(
        cfg.model_dump(exclude={"enabled", "save_models"}, exclude_unset=False)
        | ({} if "seed" in cfg.model_fields_set else {"seed": ctx.seed})
    )
    settings = settings.model_copy(update={"data": ctx.resolve(settings.data)})
    result = run_federated(settings, progress=ctx.progress)
    ctx.report.merge(federated_report(result))
    if cfg.save_models:
        saved = save_global_models(result, ctx.output_dir / "federated" / "global.pt2")
        ctx.report.subject["federated_models"] = {k: str(v) for k, v in saved.items()}
