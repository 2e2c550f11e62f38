"""The server's defences, all Flower's own: robust aggregators, norm clipping, client-level DP.

- ``fedavg``: `FedAvg` (McMahan et al. 2017), the undefended baseline.
- ``krum`` / ``multikrum``: `Krum` / `MultiKrum` (Blanchard et al. 2017), told the number
  of malicious clients ``f``; they need ``n >= 2f + 3``.
- ``median``: `FedMedian`, the coordinate-wise median (Yin et al. 2018).
- ``trimmed``: `FedTrimmedAvg`, the coordinate-wise trimmed mean with ``beta`` per side.
- ``bulyan``: `Bulyan` (El Mhamdi et al. 2018); needs ``n >= 4f + 3``.
- ``clip``: FedAvg behind `DifferentialPrivacyServerSideAdaptiveClipping` with no noise:
  every update is clipped to a norm bound that follows the median update norm
  (Andrew et al. 2021), the norm-bound defence of Sun et al., "Can You Really Backdoor
  Federated Learning?", 2019. With ``clip_norm`` set, the fixed-clipping wrapper instead.
- ``dp``: FedAvg behind `DifferentialPrivacyServerSideFixedClipping` with Gaussian noise
  (client-level DP, McMahan et al., "Learning Differentially Private Recurrent Language
  Models", 2018); epsilon from Opacus's RDP accountant (`client_dp_epsilon`), because
  Flower's own accountant needs Google's ``dp-accounting`` package, not installed here.
- ``secagg``: FedAvg under SecAgg+ (Bell et al. 2020) through Flower's `SecAggPlusWorkflow`
  (see `secagg.py`): the server sees only the sum, so no robust rule can run beside it.

`Observed` is ours: Flower's strategies do not order replies (Ray returns them in
completion order, which changes float sums) or expose the update norms they saw; it sorts
replies by client id and records each update's norm, then hands them on unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlwarden.core.errors import ParameterError

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy

STRATEGIES = ("fedavg", "krum", "multikrum", "median", "trimmed", "bulyan", "clip", "dp", "secagg")
"""Names `--strategy` accepts; ``compare`` runs all of them."""

ROBUST = ("krum", "multikrum", "median", "trimmed", "bulyan")


def tolerance_error(strategy: str, clients: int, malicious: int) -> str | None:
    """Why ``strategy`` cannot tolerate ``malicious`` of ``clients``, or None."""
    if strategy in ("krum", "multikrum") and clients < 2 * malicious + 3:
        return (
            f"{strategy} tolerates f malicious of n clients only when n >= 2f + 3; "
            f"{malicious} malicious of {clients} needs at least {2 * malicious + 3} clients"
        )
    if strategy == "bulyan" and clients < 4 * malicious + 3:
        return (
            f"bulyan tolerates f malicious of n clients only when n >= 4f + 3; "
            f"{malicious} malicious of {clients} needs at least {4 * malicious + 3} clients"
        )
    return None


def client_dp_epsilon(
    noise_multiplier: float, rounds: int, sample_rate: float, delta: float
) -> float:
    """Client-level epsilon after ``rounds`` Gaussian releases, by Opacus's RDP accountant.

    Each round releases the sum of clipped updates plus N(0, (sigma C)^2) noise; one
    client changes the sum by at most C, so a round is the sampled Gaussian mechanism
    with multiplier sigma over clients (sampled at ``sample_rate``; 1.0: all each round).
    """
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    return float(accountant.get_epsilon(delta=delta))


def build_strategy(
    name: str,
    *,
    clients: int,
    malicious: int,
    trim_beta: float = 0.2,
    clip_norm: float | None = None,
    noise_multiplier: float = 1.0,
) -> Strategy:
    """Flower's strategy ``name`` for a federation of ``clients`` with ``malicious`` attackers.

    Every client trains every round (``fraction_train=1``) and the server waits for all
    of them, so runs are reproducible; evaluation is central (`simulation.py`).
    """
    from flwr.serverapp import strategy as fs

    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": clients,
        "min_available_nodes": clients,
    }
    if name == "fedavg":
        return fs.FedAvg(**common)
    if name == "krum":
        return fs.Krum(num_malicious_nodes=malicious, **common)
    if name == "multikrum":
        return fs.MultiKrum(
            num_malicious_nodes=malicious, num_nodes_to_select=clients - malicious, **common
        )
    if name == "median":
        return fs.FedMedian(**common)
    if name == "trimmed":
        return fs.FedTrimmedAvg(beta=trim_beta, **common)
    if name == "bulyan":
        return fs.Bulyan(num_malicious_nodes=malicious, **common)
    uniform = fs.FedAvg(weighted_by_key="weight", **common)
    if name == "clip":
        if clip_norm is None:
            return fs.DifferentialPrivacyServerSideAdaptiveClipping(
                uniform,
                noise_multiplier=0.0,
                num_sampled_clients=clients,
                initial_clipping_norm=1.0,
                target_clipped_quantile=0.5,
                clipped_count_stddev=0.0,
            )
        return fs.DifferentialPrivacyServerSideFixedClipping(
            uniform, noise_multiplier=0.0, clipping_norm=clip_norm, num_sampled_clients=clients
        )
    if name == "dp":
        return fs.DifferentialPrivacyServerSideFixedClipping(
            uniform,
            noise_multiplier=noise_multiplier,
            clipping_norm=clip_norm if clip_norm is not None else 1.0,
            num_sampled_clients=clients,
        )
    raise ParameterError(
        f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)} (or 'compare')"
    )


@dataclass
class RoundObservation:
    """What the server saw of one round's updates (before any aggregation rule)."""

    honest_norms: list[float] = field(default_factory=list)
    malicious_norms: list[float] = field(default_factory=list)


class Observed:
    """A Flower strategy that orders replies by client id and records their update norms."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.rounds: dict[int, RoundObservation] = {}
        self._current: list[np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = arrays.to_numpy_ndarrays()
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        from mlwarden.defenses.federated.attacks import update_norm

        ordered = sorted(replies, key=_client_of)
        seen = RoundObservation()
        for reply in ordered:
            if reply.has_error() or self._current is None:
                continue
            arrays = reply.content["arrays"].to_numpy_ndarrays()
            norm = update_norm([a - b for a, b in zip(arrays, self._current, strict=True)])
            flag = int(reply.content["metrics"]["malicious"])
            (seen.malicious_norms if flag else seen.honest_norms).append(norm)
        self.rounds[server_round] = seen
        return self.inner.aggregate_train(server_round, ordered)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def start(self, **kwargs: Any) -> Any:
        from flwr.serverapp.strategy import Strategy

        # Strategy.start is the round loop; run it with this object's hooks.
        return Strategy.start(self, **kwargs)  # type: ignore[arg-type]


def _client_of(reply: Message) -> int:
    if reply.has_error():
        return 1 << 30
    return int(reply.content["metrics"]["partition-id"])
