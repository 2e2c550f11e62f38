"""FedAvg under secure aggregation: Flower's SecAgg+ (Bell et al., "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS 2020).

Each client's ``secaggplus_mod`` quantises its weights, adds pairwise masks agreed with
its neighbours and secret-shares its keys; `SecAggPlusWorkflow` collects only masked
vectors, cancels the masks and hands the strategy the *sum*: every `FitRes` that reaches
`Strategy.aggregate_fit` carries the same aggregate. `_SumOnlyFedAvg` records what it was
given so that the claim "the server never sees an individual update" is measured, not
assumed (`StrategyRun.aggregates_seen` is 1 each round). The aggregate equals plain
FedAvg up to SecAgg+'s quantisation (``clipping_range / quantization_range`` per value).

Flower 1.42 offers SecAgg+ only for the legacy `DefaultWorkflow` with legacy strategies
and `NumPyClient`s, so this is its own simulation beside the message-API one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mlwarden.core.errors import MlwardenError

if TYPE_CHECKING:
    from mlwarden.defenses.federated.clients import ClientJob
    from mlwarden.defenses.federated.settings import FederatedSettings
    from mlwarden.defenses.federated.simulation import Evaluator, StrategyRun

CLIPPING_RANGE = 8.0
"""SecAgg+ clips every weight to [-8, 8] before quantising (Flower's default)."""


def secagg_shares(clients: int, asked: int | None) -> int:
    """Shares per client: all clients up to 9, else 9 (or ``asked``), made odd when below
    ``clients``.

    Flower 1.42's workflow sends the share count to clients *before* it rounds an even
    count below the sample size up to odd, so an even count there makes every client's
    ``secaggplus_mod`` fail (IndexError in ``_share_keys``); we pass an odd one.
    """
    shares = min(clients, asked or 9)
    if shares < clients and shares % 2 == 0:
        shares += 1
    return max(shares, min(clients, 3))


def run_secagg(
    settings: FederatedSettings,
    job: ClientJob,
    evaluator: Evaluator,
    initial: list[np.ndarray],
    *,
    record: dict[str, Any] | None = None,
) -> StrategyRun:
    """One federation of FedAvg under SecAgg+ against the settings' attackers.

    ``record`` (tests) receives every message the server received (``"replies"``) and
    the parameter vectors handed to the strategy each round (``"aggregates"``).
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from mlwarden.defenses.federated.clients import build_secagg_client_app
    from mlwarden.defenses.federated.simulation import (
        CountingGrid,
        StrategyRun,
        _run_quietly,
        backend_config,
    )

    attack = settings.attack if settings.num_malicious else "none"
    run = StrategyRun("secagg", attack)
    seen: list[int] = []
    errors: list[BaseException] = []
    shares = secagg_shares(settings.clients, settings.secagg_shares)
    record = record if record is not None else {}
    record.setdefault("aggregates", [])
    record.setdefault("replies", [])

    class _SumOnlyFedAvg(FedAvg):
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            vectors = [parameters_to_ndarrays(fit.parameters) for _, fit in results]
            distinct = {b"".join(v.tobytes() for v in vec) for vec in vectors}
            seen.append(len(distinct))
            record["aggregates"].append(vectors[0] if vectors else [])
            return super().aggregate_fit(server_round, results, failures)

    class _RecordingGrid(CountingGrid):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            replies = super().send_and_receive(messages, timeout=timeout)
            record["replies"].extend(replies)
            return replies

    def evaluate(
        server_round: int, parameters: list[np.ndarray], config: dict
    ) -> tuple[float, dict]:  # type: ignore[type-arg]
        hook(server_round, [np.asarray(p) for p in parameters])
        return 0.0, {}

    app = ServerApp()
    hook: Any = None

    @app.main()
    def main(grid: Any, context: Any) -> None:
        nonlocal hook
        try:
            counting = _RecordingGrid(grid)
            hook = evaluator.callback(run, counting)
            strategy = _SumOnlyFedAvg(
                fraction_fit=1.0,
                fraction_evaluate=0.0,
                min_fit_clients=settings.clients,
                min_available_clients=settings.clients,
                initial_parameters=ndarrays_to_parameters(initial),
                evaluate_fn=evaluate,
                on_fit_config_fn=lambda r: {"server-round": r},
            )
            legacy = LegacyContext(
                context=context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy
            )
            workflow = DefaultWorkflow(
                fit_workflow=SecAggPlusWorkflow(
                    num_shares=shares,
                    reconstruction_threshold=shares // 2 + 1,
                    clipping_range=CLIPPING_RANGE,
                )
            )
            workflow(counting, legacy)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)

    started = time.perf_counter()
    _run_quietly(
        lambda: run_simulation(
            server_app=app,
            client_app=build_secagg_client_app(job, attack),
            num_supernodes=settings.clients,
            backend_config=backend_config(settings),  # type: ignore[arg-type]
        )
    )
    if errors:
        raise errors[0]
    if len(run.rounds) != settings.rounds + 1:
        raise MlwardenError(
            f"secagg: {len(run.rounds) - 1} of {settings.rounds} rounds completed in "
            f"{time.perf_counter() - started:.0f} s"
        )
    if len(seen) != settings.rounds:
        raise MlwardenError(
            f"secagg: SecAgg+ aggregated {len(seen)} of {settings.rounds} rounds "
            "(a client failed the protocol; rerun with MLWARDEN_DEBUG=1 to see Flower's log)"
        )
    run.aggregates_seen = max(seen)
    return run
