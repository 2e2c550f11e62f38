"""Two real `mlwarden serve` replicas sharing one Redis catch an attacker whose queries a load
balancer spreads across them after as many queries as one gateway does; honest traffic
spread the same way is never refused.

Each attack runs three times with its own key: against an in-process gateway with
``memory://`` storage (today's single process), against one Redis-backed replica, and
round-robined across both replicas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlwarden.core.errors import OracleError
from mlwarden.gateway.auth import NewKey, generate_key, write_key_file
from mlwarden.gateway.client import HttpOracle

PREFIX = "mlw-replicas"
CLIENTS = {  # key name -> output level
    "knockoff-mem": "probabilities", "knockoff-one": "probabilities",
    "knockoff-rr": "probabilities",
    "hsj-mem": "labels", "hsj-one": "labels", "hsj-rr": "labels",
    "benign-rr": "labels",
}


def serve_config(storage: str, port: int, audit: str) -> str:
    """An ``mlwarden.toml`` with small monitor windows (so a test attack is caught fast)."""
    return f"""
[model]
path = "cnn.safetensors"
factory = "mlwarden.models:SmallCNN"

[gateway]
port = {port}

[gateway.auth]
key_file = "keys.json"

[gateway.rate_limit]
storage = "{storage}"
key_prefix = "{PREFIX}"
per_key = "100000/minute"
per_key_burst = "10000/second"
per_address = "100000/minute"
per_address_burst = "10000/second"

[gateway.validation]
validator = "validator.safetensors"
ood = "flag"

[gateway.audit_log]
path = "{audit}"

[gateway.monitoring]
block_seconds = 600

[gateway.monitoring.extraction]
min_samples = 300
window = 300
ood_min_samples = 100

[gateway.monitoring.query_attack]
history = 1000
hits_to_alert = 120
"""


@dataclass
class Deployment:
    memory_url: str
    memory_state: object
    replicas: list[str]
    keys: dict[str, NewKey]
    redis_url: str

    def reason(self, name: str) -> str:
        """Why the Redis-backed replicas block ``name``'s key ('' if they do not)."""
        from mlwarden.gateway.ratelimit import ClientFlags

        prefix = self.keys[name].entry.prefix
        found = [b.reason for b in ClientFlags(self.redis_url, PREFIX).blocks()
                 if b.client == prefix and b.kind == "blocked"]
        return found[0] if found else ""

    def memory_reason(self, name: str) -> str:
        prefix = self.keys[name].entry.prefix
        alerts = [a for a in self.memory_state.alerts if a.client == prefix]  # type: ignore[attr-defined]
        return f"{alerts[0].detector}: {alerts[0].detail}" if alerts else ""


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
        assert time.monotonic() < deadline, "replica did not become ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, digits_cnn, validator, knn_threshold,
               redis_url) -> Iterator[Deployment]:
    from mlwarden.defenses.detection.ood import save_detector
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import load_serve_config
    from mlwarden.gateway.server import GatewayServer, free_port
    from mlwarden.io.export import save_weights

    root = tmp_path_factory.mktemp("replicas")
    save_weights(digits_cnn, root / "cnn.safetensors")
    save_detector(validator, root / "validator.safetensors",
                  {"query_attack_threshold": knn_threshold})
    keys = {name: generate_key(name, ("predict",), out) for name, out in CLIENTS.items()}
    write_key_file(root / "keys.json", [k.entry for k in keys.values()])
    import mlwarden

    # the replicas import the same mlwarden as the tests, whatever the working directory
    source = str(Path(mlwarden.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        config = root / f"replica{i}.toml"
        config.write_text(serve_config(redis_url, port, f"audit-{i}.jsonl"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlwarden.cli.main", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env))
        urls.append(f"http://127.0.0.1:{port}")
    (root / "memory.toml").write_text(serve_config("memory://", 0, "audit-memory.jsonl"))
    _, config = load_serve_config(root / "memory.toml")
    server = GatewayServer(create_app(digits_cnn, config)).start()
    try:
        for proc, url in zip(procs, urls, strict=True):
            _wait_ready(proc, url)
        yield Deployment(server.url, server.server.config.app.state.gateway, urls, keys,
                         redis_url)
    finally:
        server.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def knockoff_refused_after(urls: str | list[str], key: NewKey, spec) -> int:
    """Queries a knockoff thief (random queries, Orekondy et al.) got answered before its
    refusal (10 a request)."""
    from mlwarden.attacks.extraction import KnockoffExtraction

    attack = KnockoffExtraction(600, "random", epochs=1, query_batch=10, checkpoints=1, seed=0)
    with HttpOracle(urls, key.api_key, spec, batch_size=10) as oracle:
        result = attack.extract(oracle)
        assert result.stopped is not None and "blocked" in result.stopped, result.stopped
        return oracle.answered


def hsj_refused_after(urls: str | list[str], key: NewKey, spec, x, y) -> int:
    """Queries HopSkipJump (labels only) got answered before its refusal (16 a request)."""
    from mlwarden.attacks.evasion.hopskipjump import HopSkipJump

    with HttpOracle(urls, key.api_key, spec, output="labels", batch_size=16) as oracle:
        with pytest.raises(OracleError, match="blocked"):
            HopSkipJump(norm="l2", queries=3000, max_iter=20, seed=0)(oracle, x, y)
        return oracle.answered


def within_ten_percent(one: int, other: int) -> bool:
    return abs(other - one) <= 0.1 * one


def test_knockoff_round_robined_is_refused_after_as_many_queries_as_one_gateway(
    deployment, digits_spec
):
    keys = deployment.keys
    memory = knockoff_refused_after(deployment.memory_url, keys["knockoff-mem"], digits_spec)
    one = knockoff_refused_after(deployment.replicas[0], keys["knockoff-one"], digits_spec)
    both = knockoff_refused_after(deployment.replicas, keys["knockoff-rr"], digits_spec)
    print(f"\nknockoff refused after {memory} queries (one gateway, memory), {one} (one "
          f"Redis-backed replica), {both} (two replicas round-robin); "
          f"{deployment.reason('knockoff-rr')}")
    assert deployment.memory_reason("knockoff-mem").startswith("extraction")
    assert deployment.reason("knockoff-one").startswith("extraction")
    assert deployment.reason("knockoff-rr").startswith("extraction")
    assert within_ten_percent(memory, one) and within_ten_percent(memory, both)


def test_hopskipjump_round_robined_is_refused_after_as_many_queries_as_one_gateway(
    deployment, digits_split, digits_spec
):
    x, y = digits_split[1].x[:2], digits_split[1].y[:2]
    keys = deployment.keys
    memory = hsj_refused_after(deployment.memory_url, keys["hsj-mem"], digits_spec, x, y)
    one = hsj_refused_after(deployment.replicas[0], keys["hsj-one"], digits_spec, x, y)
    both = hsj_refused_after(deployment.replicas, keys["hsj-rr"], digits_spec, x, y)
    print(f"\nHopSkipJump refused after {memory} queries (one gateway, memory), {one} (one "
          f"Redis-backed replica), {both} (two replicas round-robin); "
          f"{deployment.reason('hsj-rr')}")
    assert deployment.memory_reason("hsj-mem").startswith("query_attack")
    assert deployment.reason("hsj-one").startswith("query_attack")
    assert deployment.reason("hsj-rr").startswith("query_attack")
    assert within_ten_percent(memory, one) and within_ten_percent(memory, both)


def test_an_honest_client_round_robined_is_never_refused(deployment, digits_split, digits_spec):
    test = digits_split[1]
    with HttpOracle(deployment.replicas, deployment.keys["benign-rr"].api_key, digits_spec,
                    output="labels", batch_size=10) as honest:
        labels = honest(test.x)  # the whole test set, 45 requests, alternating replicas
    assert honest.requests == 45 and honest.queries == len(test.x)
    assert (labels == test.y).float().mean() > 0.9
    assert deployment.reason("benign-rr") == ""
