"""Encrypted inference routes: the gateway evaluates a head on CKKS ciphertexts it cannot read.

``[gateway.encrypted] enabled = true`` and ``head = "head.npz"`` (`HEHead.save`) add:

* ``GET /v1/encrypted/info``: what the client needs (features, classes, the input
  normalisation to apply before encrypting, the CKKS parameters the head's depth needs);
* ``POST /v1/encrypted/context``: the client's *public* TenSEAL context (raw bytes,
  ``application/octet-stream``), kept in memory under its SHA-256, which is answered;
* ``POST /v1/predict-encrypted``: ``{"context_id": ..., "ciphertext": base64}`` in,
  ``{"scores": [base64, ...]}`` out, one encrypted score per class that only the client
  can decrypt.

The context (Galois keys: tens of MB) travels once, not with every request. Contexts live
in this process's memory, so behind several replicas a client re-sends its context when a
replica answers 404 ``unknown_context`` (`EncryptedGatewayClient` does). Every route takes
a key with the ``predict`` scope and spends the rate limits like one input of
``/v1/predict``; bodies above the configured sizes get a 413, malformed ones a 400 or 422.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlwarden.core.errors import ConfigError, InputError, ModelLoadError

if TYPE_CHECKING:
    from mlwarden.defenses.encrypted_inference import HEHead
    from mlwarden.gateway.app import GatewayState
    from mlwarden.gateway.pipeline import PredictPipeline

__all__ = ["EncryptedGatewayClient", "install_encrypted_routes"]

INFO, CONTEXT, PREDICT = "/v1/encrypted/info", "/v1/encrypted/context", "/v1/predict-encrypted"


class ContextStore:
    """Public contexts by SHA-256 of their bytes, least recently used dropped past ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def put(self, context_id: str, context: Any) -> None:
        self._items[context_id] = context
        self._items.move_to_end(context_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, context_id: str) -> Any | None:
        context = self._items.get(context_id)
        if context is not None:
            self._items.move_to_end(context_id)
        return context


def install_encrypted_routes(app: FastAPI, state: GatewayState, pipeline: PredictPipeline) -> None:
    """Add the routes when ``[gateway.encrypted] enabled``; a missing head or TenSEAL stops
    the start with a message that names the fix."""
    cfg = state.config.encrypted
    if not cfg.enabled:
        return
    from mlwarden.core.errors import require
    from mlwarden.defenses.encrypted_inference import HEHead, context_parameters

    require("tenseal", "he")
    if cfg.head is None:
        raise ConfigError(
            '[gateway.encrypted] is enabled but names no head: set head = "head.npz" '
            "(written by HEHead.save), or enabled = false"
        )
    try:
        head = HEHead.load(cfg.head)
    except ModelLoadError as exc:
        raise ConfigError(f"[gateway.encrypted] head: {exc.message}") from None
    n, bits, scale = context_parameters(head.depth)
    info = {
        "in_features": head.in_features,
        "n_classes": head.n_classes,
        "depth": head.depth,
        "mean": head.mean,
        "std": head.std,
        "poly_modulus_degree": n,
        "coeff_mod_bit_sizes": list(bits),
        "scale_bits": scale,
        "max_context_bytes": cfg.max_context_bytes,
    }
    contexts = ContextStore(cfg.max_contexts)

    async def admitted(
        request: Request, endpoint: str, limit: int
    ) -> tuple[bytes, dict[str, str], Any]:
        """Auth (``predict`` scope), flags, body size, one input of the rate budget."""
        from mlwarden.gateway.auth import client_id
        from mlwarden.gateway.errors import GatewayError
        from mlwarden.gateway.validation import read_body

        address = request.client.host if request.client else "unknown"
        principal = await pipeline.guard(request.headers, address, "predict", endpoint)
        try:
            throttled = await state.gate.admit(client_id(principal, address), address)
            body = await read_body(request.headers, _chunks(request), limit)
            key = principal.prefix if principal is not None else None
            headers = await state.gate.spend(key, address, 1, throttled)
        except GatewayError as err:
            pipeline.refused(err, principal, address, endpoint)
            raise
        return body, headers, principal

    @app.get(INFO, summary="What an encrypted-inference client needs")
    async def encrypted_info(request: Request) -> JSONResponse:
        _, headers, _ = await admitted(request, INFO, 0)
        return JSONResponse(info, headers=headers)

    def audited(endpoint: str, handler: Any) -> Any:
        """Run ``handler(request)`` after `admitted`; its refusals are audited like the rest."""
        from mlwarden.gateway.errors import GatewayError

        async def route(request: Request) -> JSONResponse:
            body, headers, principal = await admitted(request, endpoint, limits[endpoint])
            try:
                answer = await handler(body, principal, request)
            except GatewayError as err:
                address = request.client.host if request.client else "unknown"
                pipeline.refused(err, principal, address, endpoint)
                raise
            return JSONResponse(answer, headers=headers)

        return route

    async def register(body: bytes, _principal: Any, _request: Request) -> dict[str, str]:
        from mlwarden.defenses.encrypted_inference import load_context

        try:
            context = await asyncio.to_thread(load_context, body)
        except InputError as exc:
            raise _bad(400, "invalid_context", exc.message) from None
        context_id = hashlib.sha256(body).hexdigest()
        contexts.put(context_id, context)
        return {"context_id": context_id}

    async def predict(body: bytes, principal: Any, request: Request) -> dict[str, list[str]]:
        context_id, ciphertext = _parse_predict(body)
        context = contexts.get(context_id)
        if context is None:
            raise _bad(
                404,
                "unknown_context",
                f"no context '{context_id[:16]}...' here; POST it to {CONTEXT} first",
            )
        if len(ciphertext) > cfg.max_ciphertext_bytes:
            raise _bad(
                413, "payload_too_large", f"the ciphertext exceeds {cfg.max_ciphertext_bytes} bytes"
            )
        scores = await asyncio.to_thread(_evaluate, head, context, ciphertext)
        state.trail.event(
            "predict_encrypted",
            key=principal.prefix if principal is not None else None,
            address=request.client.host if request.client else "unknown",
            context_id=context_id,
            status=200,
        )
        return {"scores": [base64.b64encode(score).decode("ascii") for score in scores]}

    # base64 makes a predict body 4/3 of its ciphertext; the ciphertext's own limit is checked
    limits = {CONTEXT: cfg.max_context_bytes, PREDICT: cfg.max_ciphertext_bytes * 2}
    app.add_api_route(
        CONTEXT,
        audited(CONTEXT, register),
        methods=["POST"],
        summary="Register a public CKKS context (raw TenSEAL bytes)",
    )
    app.add_api_route(
        PREDICT,
        audited(PREDICT, predict),
        methods=["POST"],
        summary="Evaluate the head on an encrypted feature vector",
    )


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _bad(status: int, code: str, message: str) -> Exception:
    from mlwarden.gateway.errors import GatewayError

    return GatewayError(status, code, message)


def _parse_predict(body: bytes) -> tuple[str, bytes]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise _bad(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"context_id", "ciphertext"}:
        raise _bad(
            422,
            "invalid_input",
            'the body must be {"context_id": "<hex>", "ciphertext": "<base64>"}',
        )
    context_id, text = doc["context_id"], doc["ciphertext"]
    if not isinstance(context_id, str) or not isinstance(text, str):
        raise _bad(422, "invalid_input", "context_id and ciphertext must be strings")
    try:
        return context_id, base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(422, "invalid_input", "ciphertext is not base64") from None


def _evaluate(head: HEHead, context: Any, ciphertext: bytes) -> list[bytes]:
    """The head on the ciphertext; an unreadable or mis-sized one, or one whose context has
    too few levels for the head, is the client's error (422), not the server's."""
    from mlwarden.defenses.encrypted_inference import load_vector

    try:
        vector = load_vector(context, ciphertext)
        return [score.serialize() for score in head.evaluate(vector)]
    except InputError as exc:
        raise _bad(422, "invalid_ciphertext", exc.message) from None
    except (ValueError, RuntimeError) as exc:  # SEAL: "scale out of bounds", "end of modulus"
        raise _bad(
            422,
            "invalid_ciphertext",
            f"cannot evaluate the head on this ciphertext ({exc}); make the context "
            f"with the parameters {INFO} gives",
        ) from None


class EncryptedGatewayClient:
    """The client of the routes: keeps the secret key, sends the public context once.

    ``predict(features)`` normalises as the head asks, encrypts, posts and decrypts; a
    replica that lost the context (404) gets it again.
    """

    def __init__(
        self, base_url: str, api_key: str | None = None, *, http: Any = None, timeout: float = 120.0
    ) -> None:
        import httpx

        from mlwarden.defenses.encrypted_inference import EncryptedClient

        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.info = self._json(self.http.get(INFO))
        self.client = EncryptedClient(int(self.info["depth"]))
        self._public = self.client.public_context()
        self.context_id = self.register()

    def register(self) -> str:
        response = self.http.post(
            CONTEXT, content=self._public, headers={"Content-Type": "application/octet-stream"}
        )
        return str(self._json(response)["context_id"])

    def predict(self, features: Any) -> Any:
        """The decrypted score vector of one raw feature row."""
        import numpy as np

        row = np.asarray(features, float)
        if self.info["mean"] is not None:
            row = (row - np.asarray(self.info["mean"])) / np.asarray(self.info["std"])
        body = {"ciphertext": base64.b64encode(self.client.encrypt(row)).decode("ascii")}
        response = self.http.post(PREDICT, json={"context_id": self.context_id, **body})
        if response.status_code == 404:
            self.context_id = self.register()
            response = self.http.post(PREDICT, json={"context_id": self.context_id, **body})
        scores = self._json(response)["scores"]
        return self.client.decrypt([base64.b64decode(s) for s in scores])

    @staticmethod
    def _json(response: Any) -> Any:
        if response.status_code != 200:
            raise InputError(f"the gateway answered {response.status_code}: {response.text}")
        return response.json()
