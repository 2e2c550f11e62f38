"""The deployment recipes' configs are valid `mlwarden serve` configs, and they share Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.gateway.config import load_serve_config

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_compose_recipe_serves_two_replicas_on_one_redis_behind_nginx(tmp_path):
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = [s for s in services if s.startswith("gateway-")]
    assert len(replicas) == 2 and "redis" in services and "nginx" in services
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert all(f"server {name}:8000" in nginx for name in replicas)
    for name in replicas:  # only nginx publishes a port; each replica its own audit volume
        assert "ports" not in services[name]
        assert any(v.endswith(":/var/log/mlwarden") for v in services[name]["volumes"])
    _, gateway = load_serve_config(DEPLOY / "compose" / "mlwarden.toml")
    assert gateway.rate_limit.storage == "redis://redis:6379/0" and gateway.host == "0.0.0.0"


def test_the_kubernetes_recipe_config_is_valid_and_shares_redis(tmp_path):
    yaml = pytest.importorskip("yaml")
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "mlwarden-gateway.yaml").read_text()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "mlwarden-gateway") in kinds and ("Service", "mlwarden-redis") in kinds
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["mlwarden.toml"]
    (tmp_path / "mlwarden.toml").write_text(config)
    _, gateway = load_serve_config(tmp_path / "mlwarden.toml")
    assert gateway.rate_limit.storage == "redis://mlwarden-redis:6379/0"
    gateway_set = next(d for d in docs if d["kind"] == "StatefulSet")
    assert gateway_set["spec"]["replicas"] >= 2
