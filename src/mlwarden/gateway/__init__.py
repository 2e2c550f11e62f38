"""The secure serving gateway (extra ``serve``): a model behind an HTTP API that defends itself.

Public names load lazily so that ``import mlwarden.gateway`` costs nothing and a missing
``serve`` extra surfaces as a `DependencyError` only when the gateway is used.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports
from mlwarden.gateway.config import GatewayConfig, load_serve_config

_LAZY = {
    "create_app": "mlwarden.gateway.app",
    "GatewayState": "mlwarden.gateway.app",
    "HttpOracle": "mlwarden.gateway.client",
    "KeyStore": "mlwarden.gateway.auth",
    "generate_key": "mlwarden.gateway.auth",
    "AuditLog": "mlwarden.gateway.audit_log",
    "verify_chain": "mlwarden.gateway.audit_log",
    "serve": "mlwarden.gateway.server",
    "GatewayServer": "mlwarden.gateway.server",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["GatewayConfig", "load_serve_config", *_LAZY]
