"""FedAvg under secure aggregation: Flower's SecAgg+ (Bell et al., "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS 2020).

Each client's ``secaggplus_mod`` quantises its weights, adds pairwise masks agreed with
its neighbours and secret-shares its keys; `SecAggPlusWorkflow` collects only masked
vectors, cancels the masks and hands the strategy the *sum*: every `FitRes` that reaches
`Strategy.aggregate_fit` carries the same aggregate. `_SumOnlyFedAvg` records what it was
given so that the claim "the server never sees an individual update" is measured, not
assumed (`StrategyRun.aggregates_seen` is 1 each round). The aggregate equals plain
FedAvg up to SecAgg+'s quantisation (``clipping_range / quantization_range`` per value).

Flower 1.42 offers SecAgg+ only for the legacy `DefaultWorkflow` with legacy strategies;
it runs inside the same `ServerApp` as the message-API strategies, and the one
`ClientApp` (`clients.build_client_app`) answers both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlwarden.core.errors import MlwardenError

if TYPE_CHECKING:
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
    grid: Any,
    context: Any,
    settings: FederatedSettings,
    evaluator: Evaluator,
    initial: list[np.ndarray],
    attack: str,
    *,
    record: dict[str, Any] | None = None,
) -> StrategyRun:
    """FedAvg under SecAgg+ for ``settings.rounds`` rounds, inside a running `ServerApp`.

    ``record`` (tests) receives every reply the server got (``"replies"``) and the
    parameters handed to the strategy each round (``"aggregates"``).
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from mlwarden.defenses.federated.simulation import CountingGrid, StrategyRun

    run = StrategyRun("secagg", attack)
    seen: list[int] = []
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

    counting = _RecordingGrid(grid)
    hook = evaluator.callback(run, counting)

    def evaluate(server_round: int, parameters: list[np.ndarray], config: dict) -> tuple:  # type: ignore[type-arg]
        hook(server_round, [np.asarray(p) for p in parameters])
        return 0.0, {}

    strategy = _SumOnlyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=settings.clients,
        min_available_clients=settings.clients,
        initial_parameters=ndarrays_to_parameters([w.copy() for w in initial]),
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda r: {"server-round": r, "attack": attack},
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
    if len(seen) != settings.rounds:
        raise MlwardenError(
            f"secagg: SecAgg+ aggregated {len(seen)} of {settings.rounds} rounds "
            "(a client failed the protocol; rerun with MLWARDEN_DEBUG=1 to see Flower's log)"
        )
    run.aggregates_seen = max(seen)
    return run
