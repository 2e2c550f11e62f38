"""Running the app with uvicorn: in the foreground (``mlwarden serve``) or in a background
thread (tests, notebooks), always with graceful shutdown (in-flight requests finish,
the batcher drains, the audit log records ``stop``)."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

from mlwarden.core.errors import InputError, require

if TYPE_CHECKING:
    from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _uvicorn_config(app: FastAPI, host: str, port: int, graceful: float, log_level: str) -> object:
    require("uvicorn", "serve")
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=int(graceful) if graceful else None,
                          lifespan="on", loop="asyncio")


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, *,
          graceful_shutdown_seconds: float = 10.0, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(app, host, port, graceful_shutdown_seconds,
                                            log_level))  # type: ignore[arg-type]
    try:
        server.run()
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if not server.started:
        raise InputError(f"the gateway did not start on {host}:{port} (port in use?)")


class GatewayServer:
    """A uvicorn server on a loopback port in a background thread; a context manager."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None,
                 graceful_shutdown_seconds: float = 5.0) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(_uvicorn_config(app, self.host, self.port,
                                                     graceful_shutdown_seconds, "warning"))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, daemon=True,
                                       name=f"gateway-{self.port}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise InputError(f"the gateway did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
