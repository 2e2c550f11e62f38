"""Gateway fixtures: a fitted validator, API keys, real uvicorn servers, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlwarden.core import Classifier
from mlwarden.defenses.detection.ood import MahalanobisDetector
from mlwarden.gateway.auth import NewKey, generate_key
from mlwarden.gateway.config import GatewayConfig
from mlwarden.gateway.monitoring import calibrate_knn_threshold
from mlwarden.io.dataset import Dataset

pytest.importorskip("fastapi")
pytest.importorskip("limits")


@pytest.fixture(scope="session")
def validator(digits_cnn: Classifier, digits_split: tuple[Dataset, Dataset]) -> MahalanobisDetector:
    train, _ = digits_split
    return MahalanobisDetector(false_rejection_rate=0.01).fit(digits_cnn, train.x, train.y)


@pytest.fixture(scope="session")
def knn_threshold(digits_split: tuple[Dataset, Dataset]) -> float:
    return calibrate_knn_threshold(digits_split[0].x, k=10, quantile=0.001)


@pytest.fixture(scope="session")
def keys() -> dict[str, NewKey]:
    """Keys for every role the tests need."""
    return {
        "full": generate_key("full", ("predict", "metrics"), "probabilities"),
        "labels": generate_key("labels", ("predict",), "labels"),
        "topk": generate_key("topk", ("predict",), "top_k"),
        "rounded": generate_key("rounded", ("predict",), "rounded"),
        "perturbed": generate_key("perturbed", ("predict",), "perturbed"),
        "metrics_only": generate_key("metrics-only", ("metrics",)),
    }


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


GENEROUS_LIMITS = {
    "per_key": "100000/minute", "per_key_burst": "10000/second",
    "per_address": "100000/minute", "per_address_burst": "10000/second",
}


@pytest.fixture
def gateway_config(tmp_path: Path, keys: dict[str, NewKey],
                   knn_threshold: float) -> Callable[..., GatewayConfig]:
    """Build a config with every protection on, the test keys, and overrides."""

    def build(**overrides: Any) -> GatewayConfig:
        data: dict[str, Any] = {
            "auth": {"keys": [k.entry.model_dump() for k in keys.values()]},
            "rate_limit": dict(GENEROUS_LIMITS),
            "audit_log": {"path": str(tmp_path / "audit.jsonl")},
            "monitoring": {"query_attack": {"threshold": knn_threshold}},
            "validation": {"ood": "flag", "max_body_bytes": 200_000},
        }
        return GatewayConfig.from_dict(_deep_update(data, overrides))

    return build


@pytest.fixture
def start_gateway(digits_cnn: Classifier, validator: MahalanobisDetector,
                  ) -> Iterator[Callable[..., Any]]:
    """Start real uvicorn servers on loopback ports; all are stopped at teardown."""
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.server import GatewayServer

    servers: list[GatewayServer] = []

    def start(config: GatewayConfig, model: Any = None, use_validator: bool = True,
              **kw: Any) -> GatewayServer:
        app = create_app(model or digits_cnn, config,
                         validator=validator if use_validator else None, **kw)
        server = GatewayServer(app).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def client() -> Iterator[Any]:
    import httpx

    with httpx.Client(timeout=30) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A free loopback port for a server the test starts as a process."""
    return _free_port


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.2)


@pytest.fixture
def wait_ready() -> Callable[..., None]:
    """Wait until a `mlwarden serve` process answers ``/readyz`` (fails with its output
    if it exits first)."""
    return _wait_ready


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    conn = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            conn.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        conn.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

