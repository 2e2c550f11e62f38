"""HTTP errors of the gateway: one class, one JSON shape.

Every refusal is ``{"error": {"code": ..., "message": ...}}`` with a status that says who
must act: 400 malformed request, 401 no valid key (never saying whether a key exists),
403 valid key without the right, 413 body too large, 422 input outside the model's
domain, 429 rate limited, 503 not ready. A 5xx is a bug.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A refusal with an HTTP status, a stable machine code and a human message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def unauthorized() -> GatewayError:
    return GatewayError(401, "unauthorized", "missing or invalid API key",
                        {"WWW-Authenticate": 'Bearer realm="mlwarden"'})


def forbidden(message: str) -> GatewayError:
    return GatewayError(403, "forbidden", message)


def bad_request(message: str) -> GatewayError:
    return GatewayError(400, "bad_request", message)


def invalid_input(message: str) -> GatewayError:
    return GatewayError(422, "invalid_input", message)


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, "too_large", f"request body exceeds the limit of {limit} bytes")


def blocked() -> GatewayError:
    """The answer to a client an attack monitor blocked, on this request and later ones."""
    return GatewayError(403, "blocked",
                        "this client is blocked after an attack alert; contact the operator")


def rate_limited(message: str, headers: dict[str, str]) -> GatewayError:
    return GatewayError(429, "rate_limited", message, headers)
