"""One Flower simulation per test session: Ray's start-up costs far more than the rounds."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("flwr")

from mlwarden.defenses.federated.settings import FederatedSettings  # noqa: E402

SETTINGS = dict(
    clients=6,
    rounds=2,
    malicious=0.2,  # one attacker of six
    attack="backdoor",
    strategies=["fedavg", "krum", "median", "dp", "secagg"],
    local_epochs=1,
    num_cpus=2,
    engine="inprocess",  # Ray misses its 30 s start-up deadline on the loaded CI machine
    seed=3,
)


@pytest.fixture(scope="session")
def federated_settings() -> FederatedSettings:
    return FederatedSettings(**SETTINGS)


@pytest.fixture(scope="session")
def federation(federated_settings: FederatedSettings) -> tuple[Any, dict[str, Any]]:
    """The result of the session's one simulation, and what the server saw under SecAgg+."""
    from mlwarden.defenses.federated.simulation import run_federated

    record: dict[str, Any] = {}
    return run_federated(federated_settings, record=record), record
