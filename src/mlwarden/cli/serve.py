"""``mlwarden serve --config mlwarden.toml``: the model behind the protected HTTP API."""

from __future__ import annotations

from pathlib import Path

import typer

from mlwarden.cli.common import SpecOption


def serve_command(
    config: Path = typer.Option(
        Path("mlwarden.toml"),
        "--config",
        "-c",
        help="Config with a model table (path) and a gateway table.",
    ),
    host: str = typer.Option(None, "--host", help="Override the gateway host."),
    port: int = typer.Option(None, "--port", help="Override the gateway port."),
    spec: Path | None = SpecOption,
) -> None:
    """Serve a model with auth, rate limits, validation, hardening, monitoring and audit."""
    import logging

    from mlwarden.config import resolve_spec
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import load_serve_config
    from mlwarden.gateway.server import serve
    from mlwarden.io.models import load_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model_cfg, gateway = load_serve_config(config)
    # --spec, else the [spec] table of the same file the model and gateway come from
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    with using_policy(policy_from_config(config)):  # [supplychain] of the same file
        model = load_model(
            model_cfg.path, factory=model_cfg.factory, spec=resolve_spec(spec, config),
            device=model_cfg.device,
        )
    app = create_app(model, gateway)
    serve(
        app,
        host or gateway.host,
        port if port is not None else gateway.port,
        graceful_shutdown_seconds=gateway.graceful_shutdown_seconds,
    )
