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
    model_path: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model file or Hugging Face folder to serve instead of the config's [model] path "
        "(a text classifier folder serves texts); without a config file the gateway's "
        "defaults apply.",
    ),
    host: str = typer.Option(None, "--host", help="Override the gateway host."),
    port: int = typer.Option(None, "--port", help="Override the gateway port."),
    spec: Path | None = SpecOption,
) -> None:
    """Serve a model with auth, rate limits, validation, hardening, monitoring and audit."""
    import contextlib
    import logging
    from dataclasses import replace

    from mlwarden.config import resolve_spec
    from mlwarden.gateway.app import create_app
    from mlwarden.gateway.config import GatewayConfig, ServeModel, load_serve_config
    from mlwarden.gateway.server import serve
    from mlwarden.io.models import load_model
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    has_config = model_path is None or config.exists()
    if has_config:
        model_cfg, gateway = load_serve_config(config)
        if model_path is not None:
            model_cfg = replace(model_cfg, path=model_path)
    else:  # `mlwarden serve --model FOLDER` with no mlwarden.toml: the documented defaults
        assert model_path is not None
        model_cfg, gateway = ServeModel(model_path), GatewayConfig()
    # --spec, else the [spec] table of the same file the model and gateway come from;
    # [supplychain] of the same file too
    policy = (using_policy(policy_from_config(config)) if has_config
              else contextlib.nullcontext())
    with policy:
        model = load_model(
            model_cfg.path, factory=model_cfg.factory,
            spec=resolve_spec(spec, config if has_config else None), device=model_cfg.device,
        )
    app = create_app(model, gateway)
    serve(
        app,
        host or gateway.host,
        port if port is not None else gateway.port,
        graceful_shutdown_seconds=gateway.graceful_shutdown_seconds,
    )
