"""The predict pipeline: one ``POST /v1/predict`` as a sequence of named steps.

Each step lives in the module of its layer and can be used (and tested) alone:

==============  ==============================================================  ============
step            what it does                                                    where
==============  ==============================================================  ============
authenticate    the key's principal and scope; a failure spends the address's   `auth`,
                budget (brute-force guard)                                      `ratelimit`
limit           blocked clients (403), throttled ones                           `ratelimit`
parse           body size (413) and JSON (400)                                  `validation`
validate        shape, finiteness, bounds (422); a text model's: strings, not   `validation`
                blank, characters per text (422)
limit           the input budget of the key and the address (422, 429)          `ratelimit`
batch           forward pass, OOD scores, attack monitors, output hardening,    `batching`
                once per batch of concurrent requests; a text model's tokens    `text`
                (over the limit: 422) and sentence embeddings
validate        the OOD verdict: 422 or a flag                                  `validation`
monitor         act on alerts: log, throttle, block (403)                       `monitoring`
harden          the output level's release, computed in the batch step          `mlwarden.
                                                                                defenses.
                                                                                output`
log             the audit entry of every answer and refusal                     `audit_log`
==============  ==============================================================  ============

Refusals are `GatewayError`s; anything else escaping is a bug and answers 500 without
details. `PredictPipeline.respond` never raises.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from fastapi.responses import JSONResponse, Response

from mlwarden.core.text import TextSpec
from mlwarden.gateway.auth import client_id
from mlwarden.gateway.batching import BatchAnswer, BatcherClosed, Ticket
from mlwarden.gateway.errors import GatewayError
from mlwarden.gateway.validation import (
    Flag,
    ParsedBatch,
    bounds_flag,
    dump_json,
    ood_flag,
    parse_body,
    parse_inputs,
    parse_texts,
    read_body,
)

if TYPE_CHECKING:
    from mlwarden.core.spec import InputSpec
    from mlwarden.gateway.audit_log import AuditTrail
    from mlwarden.gateway.auth import Authenticator, Principal
    from mlwarden.gateway.batching import Arrival, DynamicBatcher
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.metrics import GatewayMetrics
    from mlwarden.gateway.monitoring import MonitorActions
    from mlwarden.gateway.ratelimit import RateGate

log = logging.getLogger("mlwarden.gateway")


def error_response(err: GatewayError) -> Response:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def internal_error() -> Response:
    """A bug: log it with its traceback, answer 500 without details."""
    log.exception("internal error in the gateway")
    return JSONResponse({"error": {"code": "internal", "message": "internal error"}},
                        status_code=500)


def predictions(answer: BatchAnswer, class_names: list[str]) -> list[dict[str, Any]]:
    """The per-sample prediction objects of the wire format, from a hardened answer."""
    out = []
    for i, label in enumerate(answer.labels):
        item: dict[str, Any] = {
            "label": label, "class_name": class_names[label],
            "probabilities": answer.probabilities[i] if answer.probabilities is not None
            else None,
            "top_k": None,
        }
        if answer.top_k is not None:
            values, labels = answer.top_k
            item["top_k"] = [{"label": j, "class_name": class_names[j], "probability": p}
                             for p, j in zip(values[i], labels[i], strict=True)]
        out.append(item)
    return out


@dataclass
class Call:
    """What the refusal audit needs to know about one predict call, filled as it goes."""

    address: str
    arrival: Arrival
    principal: Principal | None = None
    body_hash: str | None = None


class PredictPipeline:
    """The steps of ``POST /v1/predict``, wired to one app's parts (see the module doc)."""

    def __init__(
        self, *, config: GatewayConfig, spec: InputSpec | TextSpec, model_name: str,
        authenticate: Authenticator, gate: RateGate, batcher: DynamicBatcher,
        monitor: MonitorActions, audit: AuditTrail, metrics: GatewayMetrics,
        ood_threshold: float | None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.model_name = model_name
        self.authenticate = authenticate
        self.gate = gate
        self.batcher = batcher
        self.monitor = monitor
        self.audit = audit
        self.metrics = metrics
        self.ood_threshold = ood_threshold
        self.class_names = list(spec.class_names or ())
        self.text = isinstance(spec, TextSpec)  # requests carry strings

    async def respond(
        self, headers: Mapping[str, str], address: str, chunks: AsyncIterator[bytes]
    ) -> Response:
        """The whole answer to one request: never raises, never a 5xx for bad input;
        counts it, times it, and audits refusals."""
        started = time.perf_counter()
        call = Call(address, arrival=self.batcher.expect())
        status = 500
        try:
            response = await self.predict(headers, call, chunks)
            status = response.status_code
            return response
        except GatewayError as err:
            status = err.status
            self.refused(err, call.principal, address, "/v1/predict", call.body_hash)
            return error_response(err)
        except Exception:
            return internal_error()
        finally:
            call.arrival.done()  # refused before reaching the batcher: stop expecting it
            self.metrics.request_done("predict", status, time.perf_counter() - started)

    # -- refusals (every one audited with the key that authenticated, if any) -------------

    def refused(self, err: GatewayError, principal: Principal | None, address: str,
                endpoint: str, body_hash: str | None = None) -> None:
        """Count and audit a refusal on ``endpoint``."""
        self.metrics.refusals.labels(err.code).inc()
        self.audit.refused(key=principal.prefix if principal is not None else None,
                           address=address, status=err.status, reason=err.code,
                           detail=err.message, input_sha256=body_hash, endpoint=endpoint)

    async def identify(self, headers: Mapping[str, str], address: str) -> Principal | None:
        """The authenticate step's first half: the key's principal; a failure spends the
        address's budget and counts towards its ``failed_auth`` alert (401, 403, 429)."""
        try:
            return self.authenticate.identify(headers)
        except GatewayError as err:
            if err.status == 401:
                alerts = await self.gate.failed_auth(address)
                await self.monitor(alerts, [], f"addr:{address}", None, address)
            raise

    async def guard(self, headers: Mapping[str, str], address: str, scope: str,
                    endpoint: str) -> Principal | None:
        """Authenticate a request to another endpoint (``/metrics``, the admin routes) for
        ``scope``; a refusal is audited like a predict refusal, then raised."""
        principal = None
        try:
            principal = await self.identify(headers, address)
            self.authenticate.authorize(principal, scope)
            return principal
        except GatewayError as err:
            self.refused(err, principal, address, endpoint)
            raise

    async def predict(
        self, headers: Mapping[str, str], call: Call, chunks: AsyncIterator[bytes]
    ) -> Response:
        """The steps in order; each refusal is a `GatewayError`."""
        cfg, address = self.config, call.address
        # authenticate
        principal = await self.identify(headers, address)
        call.principal = principal
        self.authenticate.authorize(principal, "predict")
        key = principal.prefix if principal is not None else None
        client = client_id(principal, address)
        # limit: the client's flags (and its address's, after a failed_auth alert)
        throttled = await self.gate.admit(client, address)
        # parse
        body = await read_body(headers, chunks, cfg.validation.max_body_bytes)
        call.body_hash = hashlib.sha256(body).hexdigest()
        # validate the inputs
        payload = parse_body(body)
        batch: ParsedBatch | None = None
        inputs: torch.Tensor | list[str]
        if self.text:
            inputs = parse_texts(payload, cfg.max_inputs, cfg.text.max_chars)
        else:
            batch = parse_inputs(payload, self.spec, cfg.max_inputs,  # type: ignore[arg-type]
                                 cfg.validation.bounds)
            inputs = torch.from_numpy(batch.x)
        n = len(inputs)
        # limit: the input budget
        rate_headers = await self.gate.spend(key, address, n, throttled)
        # batch (forward pass, OOD scores, monitors and hardening, shared with the batch)
        level = (principal.output if principal is not None and principal.output
                 else cfg.hardening.default_output)
        try:
            answer: BatchAnswer | GatewayError = await self.batcher.submit(
                inputs, Ticket(client, level), call.arrival)
        except BatcherClosed:
            raise GatewayError(503, "shutting_down", "the gateway is shutting down; retry "
                               "on another replica", {"Retry-After": "1"}) from None
        if isinstance(answer, GatewayError):  # refused in the batch step (tokens of a text)
            raise answer
        # validate the model's OOD verdict
        flags: list[Flag] = []
        bounds = bounds_flag(batch, cfg.validation.bounds) if batch is not None else None
        if bounds is not None:
            flags.append(bounds)
        if self.ood_threshold is not None:
            ood = ood_flag(answer.ood, self.ood_threshold, cfg.validation.ood)
            if ood is not None:
                flags.append(ood)
        # monitor
        await self.monitor(answer.alerts, answer.group_alerts, client, key, address)
        # harden: the answer is already released at `level`; here it takes the wire format
        for f in flags:
            self.metrics.flags.labels(f.check).inc(len(f.samples))
        self.metrics.inputs.inc(n)
        payload = {"predictions": predictions(answer, self.class_names),
                   "model": self.model_name, "flags": [f.public() for f in flags if f.visible]}
        # log
        self.audit.predicted(key=key, address=address,
                             inputs=batch.x if batch is not None else inputs,
                             input_sha256=call.body_hash, labels=answer.labels, flags=flags,
                             output=level)
        return Response(dump_json(payload), media_type="application/json",
                        headers=rate_headers)
