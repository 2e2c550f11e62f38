"""The FastAPI app factory: a model behind an API that authenticates, rate-limits,
validates, hardens its outputs, watches for attacks and writes an audit trail.

One request to ``POST /v1/predict`` passes the layers in this order (each its own module):
auth (`auth`) -> flags of earlier alerts (`ratelimit.ClientFlags`) -> body size and
schema (`validation`) -> rate limit in inputs (`ratelimit`) -> dynamic batch through the
model (`batching`, `runner`) -> OOD check (`mlwarden.defenses.detection.ood`) -> attack
monitors (`monitoring`) -> output hardening (`mlwarden.defenses.output`) -> audit
(`audit_log`). Refusals are `GatewayError`s; anything else escaping is a bug and answers
500 without details. The predict path is served by `PredictFastPath`, an ASGI layer in
front of FastAPI's router; FastAPI serves everything else and the OpenAPI schema.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ConfigError, require

require("fastapi", "serve")  # this module is only imported when the gateway is used
from fastapi import FastAPI, Request  # noqa: E402  (FastAPI resolves route annotations here)
from fastapi.responses import JSONResponse, Response  # noqa: E402

if TYPE_CHECKING:

    from mlwarden.core.classifier import Classifier
    from mlwarden.core.oracle import Oracle
    from mlwarden.defenses.detection.ood import OODDetector
    from mlwarden.gateway.auth import KeyStore, Principal
    from mlwarden.gateway.batching import Arrival
    from mlwarden.gateway.config import GatewayConfig

log = logging.getLogger("mlwarden.gateway")
_HEADER_KEY = "x-api-key"


@dataclass
class BatchAnswer:
    """What the batch worker hands back to one request."""

    probs: Any  # (n, C) tensor, for hardening that needs tensors (perturbed, top-k)
    labels: list[int]
    rows: list[list[float]]  # the same probabilities as Python lists
    ood: list[bool] | None  # the OOD validator's flag per sample, when one runs
    alerts: list[Any]  # alerts this request raised (first request of its client in the batch)
    group_alerts: list[Any]  # alerts of its client's whole group in the batch


@dataclass
class GatewayState:
    """Everything one app holds; exposed as ``app.state.gateway`` for tests and operators."""

    config: GatewayConfig
    model_name: str
    spec: Any
    keys: KeyStore
    limiter: Any
    flags: Any
    batcher: Any
    metrics: Any
    monitors: Any
    audit: Any
    validator: OODDetector | None
    hardening: Any
    ready: bool = False
    alerts: list[Any] = field(default_factory=list)


def create_app(
    model: Classifier | Oracle,
    config: GatewayConfig | None = None,
    *,
    validator: OODDetector | None = None,
    validator_extra: dict[str, Any] | None = None,
    keys: KeyStore | None = None,
) -> FastAPI:
    """Build the gateway app for an already loaded `Classifier` (or black-box `Oracle`).

    ``validator`` is a fitted OOD detector; when None and ``config.validation.validator``
    names a file, it is loaded from there. A Mahalanobis validator needs a `Classifier`
    (an `Oracle`, e.g. ONNX, exposes no features): `ConfigError` otherwise.
    """
    import torch

    from mlwarden.core.classifier import Classifier
    from mlwarden.defenses.detection.ood import EnergyDetector, load_detector
    from mlwarden.gateway.audit_log import AuditLog
    from mlwarden.gateway.auth import KeyStore
    from mlwarden.gateway.batching import DynamicBatcher
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.metrics import GatewayMetrics
    from mlwarden.gateway.monitoring import MonitorBank
    from mlwarden.gateway.ratelimit import ClientFlags, RateLimiter
    from mlwarden.gateway.runner import ModelRunner

    config = config or GatewayConfig()
    extra = dict(validator_extra or {})
    if validator is None and config.validation.validator is not None:
        validator, extra = load_detector(config.validation.validator)
    is_classifier = isinstance(model, Classifier)
    if validator is not None and not is_classifier:
        raise ConfigError(
            "gateway.validation.validator: an OOD validator needs the model's features or "
            "logits, which a black-box oracle (e.g. ONNX) does not expose; remove it"
        )
    runner = ModelRunner(model, validator)
    metrics = GatewayMetrics()
    batching = config.batching

    def run_batch(x: Any, items: list[tuple[Any, int]]) -> list[BatchAnswer]:
        """Forward pass, OOD scores and the attack monitors for a whole batch, in the worker
        thread; one `BatchAnswer` per request, in arrival order. Labels, probabilities and
        OOD flags become Python lists here, once per batch, not once per request."""
        probs, scores = runner(x)
        labels = probs.argmax(dim=1)
        flagged = scores > validator.threshold_ if (scores is not None and validator) else None
        label_list, prob_rows = labels.tolist(), probs.tolist()
        flag_list = flagged.tolist() if flagged is not None else None
        # one monitor update per client and batch (rows kept in arrival order): the k-NN
        # search over a client's history then costs one matrix product, not one per request
        rows_of: dict[Any, list[int]] = {}
        first_of: dict[Any, int] = {}
        spans, start = [], 0
        for i, (client, n) in enumerate(items):
            rows_of.setdefault(client, []).extend(range(start, start + n))
            first_of.setdefault(client, i)
            spans.append((start, start + n))
            start += n
        alerts_of: dict[Any, list[Any]] = {}
        if len(rows_of) == 1:  # the whole batch is one client's: no gather needed
            (client,) = rows_of
            alerts_of[client] = state.monitors.observe(client, x, labels, flagged)
        else:
            for client, rows in rows_of.items():
                idx = torch.tensor(rows)
                ood = flagged[idx] if flagged is not None else None
                alerts_of[client] = state.monitors.observe(client, x[idx], labels[idx], ood)
        out = []
        for i, ((client, _), (a, b)) in enumerate(zip(items, spans, strict=True)):
            group = alerts_of[client]
            out.append(BatchAnswer(
                probs=probs[a:b], labels=label_list[a:b], rows=prob_rows[a:b],
                ood=flag_list[a:b] if flag_list is not None else None,
                alerts=group if first_of[client] == i else [], group_alerts=group))
        return out

    batcher = DynamicBatcher(run_batch, max_batch_size=batching.max_batch_size,
                             max_wait_ms=batching.max_wait_ms, enabled=batching.enabled,
                             in_thread=batching.worker_thread,
                             on_batch=metrics.batch_size.observe)
    if config.auth.enabled:
        key_store = keys or KeyStore(config.auth.keys, config.auth.key_file)
    else:
        key_store = keys or KeyStore([])
    mon = config.monitoring
    ext_cfg = (mon.extraction.model_dump(exclude={"enabled", "action"})
               if mon.extraction.enabled else None)
    qa_cfg = None
    if mon.query_attack.enabled:
        threshold = mon.query_attack.threshold or extra.get("query_attack_threshold")
        if threshold is None:
            raise ConfigError(
                "gateway.monitoring.query_attack.threshold is not set and no validator file "
                "provides one; run `mlwarden gateway fit-validator` or set it"
            )
        qa_cfg = {"threshold": float(threshold), "k": mon.query_attack.k,
                  "history": mon.query_attack.history,
                  "hits_to_alert": mon.query_attack.hits_to_alert}
    spec = model.spec
    state = GatewayState(
        config=config,
        model_name=config.model_name or getattr(model, "name", None) or "model",
        spec=spec,
        keys=key_store,
        limiter=RateLimiter(config.rate_limit, mon.throttle_rate),
        flags=ClientFlags(config.rate_limit.storage, config.rate_limit.key_prefix),
        batcher=batcher,
        metrics=metrics,
        monitors=MonitorBank(extraction=ext_cfg, query_attack=qa_cfg,
                             max_clients=mon.max_clients),
        audit=AuditLog(config.audit_log.path, fsync=config.audit_log.fsync)
        if config.audit_log.enabled else None,
        validator=validator,
        hardening=config.hardening,
    )
    if isinstance(validator, EnergyDetector) and not runner.has_logits:  # pragma: no cover
        raise ConfigError("an energy validator needs logits")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import gc

        # Everything loaded so far (torch, the model, FastAPI) lives as long as the server:
        # keep it out of the collector's full passes, which otherwise stall requests.
        gc.freeze()
        await batcher.start()
        state.ready = True
        metrics.ready.set(1)
        if state.audit is not None:
            state.audit.append("start", model=state.model_name)
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained in-flight requests by now
            state.ready = False
            metrics.ready.set(0)
            await batcher.close()
            if state.audit is not None:
                state.audit.append("stop", model=state.model_name)
                state.audit.close()

    app = FastAPI(
        title="mlwarden gateway",
        version="1",
        description=f"Protected inference API for model '{state.model_name}'.",
        lifespan=lifespan,
    )
    app.state.gateway = state
    _install_routes(app, state)
    return app


# -- routes ------------------------------------------------------------------------------


def _install_routes(app: FastAPI, state: GatewayState) -> None:
    import anyio
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mlwarden.gateway.batching import BatcherClosed
    from mlwarden.gateway.errors import GatewayError
    from mlwarden.gateway.schemas import ErrorResponse, Health, PredictResponse
    from mlwarden.gateway.validation import request_schema

    config = state.config
    metrics = state.metrics

    def error_response(err: GatewayError) -> Response:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_r: Request, err: GatewayError) -> Response:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {"msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(GatewayError(422, "invalid_input", f"{loc}: {first['msg']}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, err: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(err.detail)}},
                            status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(_r: Request, err: Exception) -> Response:
        return _internal_error()

    errors = {s: {"model": ErrorResponse} for s in (400, 401, 403, 413, 422, 429)}

    def principal_for(headers: Mapping[str, str], scope: str) -> Principal | None:
        if not config.auth.enabled:
            return None
        key = headers.get(_HEADER_KEY)
        auth = headers.get("authorization")
        if key is None and auth is not None:
            kind, _, value = auth.partition(" ")
            key = value.strip() if kind.lower() == "bearer" else None
        principal = state.keys.authenticate(key)
        if principal is None:
            raise _unauthorized()
        if scope not in principal.scopes:
            raise GatewayError(403, "forbidden", f"this key lacks the '{scope}' scope")
        return principal

    def _unauthorized() -> GatewayError:
        from mlwarden.gateway.errors import unauthorized

        return unauthorized()

    async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes]) -> bytes:
        from mlwarden.gateway.errors import too_large

        limit = config.validation.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise too_large(limit)
            except ValueError:
                raise GatewayError(400, "bad_request", "Content-Length is not a number") from None
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def in_thread_if_remote(fn: Any, *args: Any) -> Any:
        # Redis calls block; keep them off the event loop. Memory storage is microseconds.
        if state.limiter.is_remote:
            return await anyio.to_thread.run_sync(lambda: fn(*args))
        return fn(*args)

    def audit(event: str, **fields: Any) -> None:
        if state.audit is not None:
            state.audit.append(event, model=state.model_name, **fields)

    predict_openapi = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema(
                state.spec, config.validation.max_batch)}},
        }
    }

    async def respond_predict(
        headers: Mapping[str, str], address: str, chunks: AsyncIterator[bytes]
    ) -> Response:
        """The whole answer to one ``POST /v1/predict``: never raises, never a 5xx for bad
        input; counts it, times it, and audits refusals."""
        started = time.perf_counter()
        call = _Call(address, arrival=state.batcher.expect())
        status = 500
        try:
            response = await _predict(headers, call, chunks)
            status = response.status_code
            return response
        except GatewayError as err:
            status = err.status
            metrics.refusals.labels(err.code).inc()
            who = call.principal
            audit("refuse", key=who.prefix if who else None, address=address,
                  status=err.status, reason=err.code, detail=err.message,
                  input_sha256=call.body_hash)
            return error_response(err)
        except Exception:
            return _internal_error()
        finally:
            call.arrival.done()  # refused before reaching the batcher: stop expecting it
            metrics.request_done("predict", status, time.perf_counter() - started)

    @app.post("/v1/predict", response_model=PredictResponse, responses=errors,
              openapi_extra=predict_openapi, summary="Predict a batch of inputs")
    async def predict(request: Request) -> Response:
        # Declares the route for the OpenAPI schema. Requests are answered by
        # `PredictFastPath` in front of the router, which calls `respond_predict` too.
        address = request.client.host if request.client else "unknown"
        return await respond_predict(request.headers, address, request.stream())

    app.add_middleware(PredictFastPath, respond=respond_predict)

    async def _predict(
        headers: Mapping[str, str], call: _Call, chunks: AsyncIterator[bytes]
    ) -> Response:
        import numpy as np
        import torch

        from mlwarden.gateway.validation import dump_json, parse_body, parse_inputs

        address = call.address
        try:
            principal = principal_for(headers, "predict")
        except GatewayError as err:
            if err.status == 401:  # brute-force guard: failures spend the address budget
                guard = await in_thread_if_remote(state.limiter.check, None, address, 1)
                if not guard.allowed:
                    raise GatewayError(429, "rate_limited", "too many requests from this "
                                       "address", guard.headers) from None
            raise
        call.principal = principal
        client = principal.prefix if principal is not None else f"addr:{address}"
        blocked, throttled = await in_thread_if_remote(state.flags.blocked_throttled, client)
        if blocked:
            raise GatewayError(403, "blocked",
                               "this client is blocked after an attack alert; contact the operator")
        body = await read_body(headers, chunks)
        call.body_hash = hashlib.sha256(body).hexdigest()
        batch = parse_inputs(parse_body(body), state.spec, config.validation.max_batch,
                             config.validation.bounds)
        n = len(batch.x)
        decision = await in_thread_if_remote(
            state.limiter.check, principal.prefix if principal else None, address, n, throttled)
        if decision.too_large:
            raise GatewayError(422, "batch_exceeds_rate_limit",
                               f"a batch of {n} inputs exceeds the '{decision.scope}' limit of "
                               f"{decision.limit} inputs; send smaller batches")
        if not decision.allowed:
            raise GatewayError(429, "rate_limited",
                               f"rate limit '{decision.scope}' of {decision.limit} inputs per "
                               f"window exceeded; retry after {decision.headers['Retry-After']} s",
                               decision.headers)
        x = torch.from_numpy(batch.x)
        try:
            answer: BatchAnswer = await state.batcher.submit(x, client, call.arrival)
        except BatcherClosed:
            raise GatewayError(503, "shutting_down", "the gateway is shutting down; retry "
                               "on another replica", {"Retry-After": "1"}) from None
        flags: list[dict[str, Any]] = []
        if batch.out_of_bounds:
            _flag(flags, "bounds", batch.out_of_bounds, "values clipped into the input bounds",
                  config.validation.bounds)
        if answer.ood is not None and any(answer.ood):
            v = state.validator
            assert v is not None
            idx = [i for i, flagged in enumerate(answer.ood) if flagged]
            detail = (f"out-of-distribution score above the calibrated threshold "
                      f"{v.threshold_:.4g}")
            if config.validation.ood == "reject":
                raise GatewayError(422, "out_of_distribution",
                                   f"sample(s) {idx[:5]} are out of distribution: {detail}")
            _flag(flags, "ood", idx, detail, config.validation.ood)
        alerts, group_alerts = answer.alerts, answer.group_alerts
        blocked = False
        for alert in alerts:
            action = getattr(config.monitoring, alert.detector).action
            state.alerts.append(alert)
            metrics.alerts.labels(alert.detector).inc()
            log.warning("attack alert %s for %s after %d queries: %s", alert.detector,
                        alert.client, alert.queries, alert.detail)
            audit("alert", key=principal.prefix if principal else None, address=address,
                  detector=alert.detector, detail=alert.detail, queries=alert.queries,
                  action=action)
            if action == "block":
                await in_thread_if_remote(state.flags.set, "blocked", client,
                                          config.monitoring.block_seconds)
                blocked = True
            elif action == "throttle":
                await in_thread_if_remote(state.flags.set, "throttled", client,
                                          config.monitoring.block_seconds)
        if any(getattr(config.monitoring, a.detector).action == "block" for a in group_alerts):
            blocked = True  # an alert raised by this client's batch covers all its requests
        if blocked:
            raise GatewayError(403, "blocked",
                               "this client is blocked after an attack alert; contact the operator")
        for f in flags:
            metrics.flags.labels(f["check"]).inc(len(f["samples"]))
        metrics.inputs.inc(n)
        level = (principal.output if principal and principal.output
                 else config.hardening.default_output)
        predictions = _harden(answer, level, state)
        visible = [f for f in flags if f.pop("action") == "flag"]
        audit_fields: dict[str, Any] = {}
        if config.audit_log.include_inputs:
            audit_fields["inputs"] = np.round(batch.x, 6).tolist()
        audit("predict", key=principal.prefix if principal else None, address=address,
              status=200, inputs_count=n, input_sha256=call.body_hash,
              labels=answer.labels, flags=[{"check": f["check"], "samples": f["samples"]}
                                              for f in flags], output=level, **audit_fields)
        payload = {"predictions": predictions, "model": state.model_name, "flags": visible}
        return Response(dump_json(payload), media_type="application/json",
                        headers=decision.headers)

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}},
             summary="Readiness")
    async def readyz() -> Response:
        storage_ok = await in_thread_if_remote(state.limiter.ping)
        ok = state.ready and state.batcher.running and storage_ok
        reason = "ok" if ok else ("rate-limit storage unreachable" if not storage_ok
                                  else "not ready")
        return JSONResponse({"status": reason}, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", responses={401: {"model": ErrorResponse},
                                                                   403: {"model": ErrorResponse}})
    async def prometheus(request: Request) -> Response:
        if not config.auth.public_metrics:
            principal_for(request.headers, "metrics")
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)


def _internal_error() -> Response:
    """A bug: log it with its traceback, answer 500 without details."""
    log.exception("internal error in the gateway")
    return JSONResponse({"error": {"code": "internal", "message": "internal error"}},
                        status_code=500)


def _flag(flags: list[dict[str, Any]], check: str, samples: list[int], detail: str,
          action: str) -> None:
    flags.append({"check": check, "samples": samples, "detail": detail, "action": action})


def _harden(answer: BatchAnswer, level: str, state: GatewayState) -> list[dict[str, Any]]:
    """The per-sample prediction objects at the output detail ``level``."""
    from mlwarden.defenses import output as hardening

    names = state.spec.class_names
    cfg = state.hardening
    rows: list[list[float]] | None = None
    if level == "probabilities":
        rows = answer.rows
    elif level == "rounded":  # the label field keeps the model's own answer
        rows = [[round(v, cfg.decimals) for v in row] for row in answer.rows]
    elif level == "perturbed":
        rows = hardening.reverse_sigmoid(answer.probs, cfg.perturb_beta, cfg.perturb_gamma).tolist()
    top = None
    if level == "top_k":
        values, indices = hardening.top_k(answer.probs, cfg.top_k)
        top = (values.tolist(), indices.tolist())
    out = []
    for i, label in enumerate(answer.labels):
        item: dict[str, Any] = {"label": label, "class_name": names[label],
                                "probabilities": rows[i] if rows is not None else None,
                                "top_k": None}
        if top is not None:
            item["top_k"] = [
                {"label": j, "class_name": names[j], "probability": round(p, 6)}
                for p, j in zip(top[0][i], top[1][i], strict=True)
            ]
        out.append(item)
    return out


@dataclass
class _Call:
    """What the refusal audit needs to know about one predict call, filled as it goes."""

    address: str
    arrival: Arrival
    principal: Principal | None = None
    body_hash: str | None = None


class PredictFastPath:
    """ASGI layer that answers ``POST /v1/predict`` before FastAPI's router.

    Why: the predict route parses and validates its own body (see `validation`), so
    FastAPI's per-request machinery (routing, dependency solving, request objects, the
    exception and exit-stack middlewares) buys it nothing; skipping it takes about a
    tenth off the gateway's CPU time per request. Every other path goes to FastAPI.
    """

    def __init__(self, app: Any, respond: Any) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["path"] != "/v1/predict"
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        client = scope.get("client")
        response = await self.respond(headers, client[0] if client else "unknown",
                                      _body_chunks(receive))
        await response(scope, receive, send)


async def _body_chunks(receive: Any) -> AsyncIterator[bytes]:
    """The request body as it arrives; ends early if the client goes away."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
