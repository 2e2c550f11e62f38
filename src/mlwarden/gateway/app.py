"""The FastAPI app factory: a model behind an API that authenticates, rate-limits,
validates, hardens its outputs, watches for attacks and writes an audit trail.

`create_app` builds each layer from the config and wires them: the predict pipeline
(`pipeline.PredictPipeline`, whose steps live in `auth`, `ratelimit`, `validation`,
`batching`, `monitoring`, `mlwarden.defenses.output` and `audit_log`), the batcher that
runs the model, and the routes. The predict path is served by `PredictFastPath`, an ASGI
layer in front of FastAPI's router; FastAPI serves everything else and the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    from mlwarden.core.text import TextClassifier
    from mlwarden.defenses.detection.ood import OODDetector
    from mlwarden.gateway.audit_log import AuditLog, AuditTrail
    from mlwarden.gateway.auth import Authenticator, KeyStore
    from mlwarden.gateway.batching import DynamicBatcher
    from mlwarden.gateway.config import GatewayConfig, HardeningConfig
    from mlwarden.gateway.metrics import GatewayMetrics
    from mlwarden.gateway.monitoring import Alert, MonitorBank
    from mlwarden.gateway.pipeline import PredictPipeline
    from mlwarden.gateway.ratelimit import ClientFlags, RateGate, RateLimiter
    from mlwarden.gateway.text import TextBatchWorker
    from mlwarden.gateway.tuning import RuntimeChoice


@dataclass
class GatewayState:
    """Everything one app holds; exposed as ``app.state.gateway`` for tests and operators."""

    config: GatewayConfig
    model_name: str
    spec: Any
    keys: KeyStore
    authenticate: Authenticator
    limiter: RateLimiter
    flags: ClientFlags
    gate: RateGate
    batcher: DynamicBatcher
    metrics: GatewayMetrics
    monitors: MonitorBank
    audit: AuditLog | None
    trail: AuditTrail
    validator: OODDetector | None
    hardening: HardeningConfig
    runtime: RuntimeChoice
    pipeline: PredictPipeline | None = None
    ready: bool = False
    alerts: list[Alert] = field(default_factory=list)


def create_app(
    model: Classifier | Oracle | TextClassifier,
    config: GatewayConfig | None = None,
    *,
    validator: OODDetector | None = None,
    validator_extra: dict[str, Any] | None = None,
    keys: KeyStore | None = None,
) -> FastAPI:
    """Build the gateway app for an already loaded `Classifier` (or black-box `Oracle`), or
    a `TextClassifier` (then requests carry texts; see `mlwarden.gateway.text`).

    ``validator`` is a fitted OOD detector; when None and ``config.validation.validator``
    names a file, it is loaded from there. A validator needs the model's hidden features
    (`mlwarden.core.contract.Capability.FEATURES`), which an `Oracle` (e.g. ONNX) does not
    offer: `ConfigError` otherwise, before anything is loaded.
    """
    from functools import partial

    from mlwarden.defenses.detection.ood import load_detector
    from mlwarden.defenses.output import release
    from mlwarden.gateway.audit_log import AuditTrail, open_audit_log
    from mlwarden.gateway.auth import Authenticator, KeyStore
    from mlwarden.gateway.batching import BatchWorker, DynamicBatcher
    from mlwarden.gateway.config import GatewayConfig
    from mlwarden.gateway.metrics import GatewayMetrics
    from mlwarden.gateway.monitor_store import monitor_store
    from mlwarden.gateway.monitoring import MonitorActions, MonitorBank
    from mlwarden.gateway.pipeline import PredictPipeline
    from mlwarden.gateway.ratelimit import ClientFlags, RateGate, RateLimiter
    from mlwarden.gateway.runner import ModelRunner, check_validator
    from mlwarden.gateway.text import TextBatchWorker, check_text_model, serves_text
    from mlwarden.gateway.tuning import apply_runtime, choose_runtime

    config = config or GatewayConfig()
    if serves_text(model):
        check_text_model(model)
    if validator is not None or config.validation.validator is not None:
        check_validator(model)
    extra = dict(validator_extra or {})
    if validator is None and config.validation.validator is not None:
        validator, extra = load_detector(config.validation.validator)
    mon = config.monitoring
    store = monitor_store(mon.storage_uri(config.rate_limit.storage),
                          config.rate_limit.key_prefix, mon.shared_entries,
                          mon.shared_ttl_seconds)
    monitors = MonitorBank(extraction=_extraction_settings(config),
                           query_attack=_query_attack_settings(config, extra),
                           max_clients=mon.max_clients, repeat_window=mon.repeat_window,
                           store=store)
    hard = config.hardening
    harden = partial(release, k=hard.top_k, decimals=hard.decimals, beta=hard.perturb_beta,
                     gamma=hard.perturb_gamma)
    worker: BatchWorker | TextBatchWorker
    if serves_text(model):  # tokenized in the batch step, monitored on sentence embeddings
        worker = TextBatchWorker(model, monitors, harden, config.text,  # type: ignore[arg-type]
                                 validator=validator)
    else:
        worker = BatchWorker(ModelRunner(model, validator), monitors, harden,
                             ood_threshold=validator.threshold_ if validator is not None
                             else None)
    metrics = GatewayMetrics()
    batching = config.batching
    runtime = choose_runtime(batching.torch_threads, batching.worker_thread, model)
    apply_runtime(runtime)
    batcher = DynamicBatcher(worker, max_batch_size=batching.max_batch_size,
                             max_wait_ms=batching.max_wait_ms, enabled=batching.enabled,
                             in_thread=runtime.worker_thread,
                             on_batch=metrics.batch_size.observe)
    if config.auth.enabled:
        key_store = keys or _configured_keys(config)
    else:
        key_store = keys or KeyStore([])
    model_name = config.model_name or getattr(model, "name", None) or "model"
    limiter = RateLimiter(config.rate_limit, mon.throttle_rate)
    flags = ClientFlags(config.rate_limit.storage, config.rate_limit.key_prefix)
    audit = open_audit_log(config.audit_log) if config.audit_log.enabled else None
    state = GatewayState(
        config=config,
        model_name=model_name,
        spec=model.spec,
        keys=key_store,
        authenticate=Authenticator(key_store, config.auth.enabled),
        limiter=limiter,
        flags=flags,
        gate=RateGate(limiter, flags, mon.failed_auth),
        batcher=batcher,
        metrics=metrics,
        monitors=monitors,
        audit=audit,
        trail=AuditTrail(audit, model_name, include_inputs=config.audit_log.include_inputs),
        validator=validator,
        hardening=hard,
        runtime=runtime,
    )
    state.pipeline = PredictPipeline(
        config=config, spec=state.spec, model_name=model_name,
        authenticate=state.authenticate, gate=state.gate, batcher=batcher,
        monitor=MonitorActions(mon, state.gate.flag, audit=state.trail, metrics=metrics,
                               raised=state.alerts),
        audit=state.trail, metrics=metrics,
        ood_threshold=worker.ood_threshold,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import gc

        # Everything loaded so far (torch, the model, FastAPI) lives as long as the server:
        # keep it out of the collector's full passes, which otherwise stall requests.
        gc.freeze()
        await batcher.start()
        state.ready = True
        metrics.ready.set(1)
        state.trail.event("start")
        try:
            yield
        finally:
            # uvicorn has stopped accepting and drained in-flight requests by now
            state.ready = False
            metrics.ready.set(0)
            await batcher.close()
            state.trail.event("stop")
            state.trail.close()

    app = FastAPI(
        title="mlwarden gateway",
        version="1",
        description=f"Protected inference API for model '{state.model_name}'.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = state
    _install_routes(app, state, state.pipeline)
    _declare_security(app, config)
    if config.docs:
        _install_docs(app)
    return app


DOCS_ASSETS = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the assets ``fastapi-offline`` ships.

    FastAPI's default pages load their scripts from a CDN, so they are blank on a host
    with no internet (where gateways often run) and pull third-party code into the
    operator's browser. Only the asset files of ``fastapi-offline`` are used (Swagger
    UI 5, which renders FastAPI's OpenAPI 3.1; `swagger-ui-bundle` ships 4.x, which
    refuses it); the pages are ours, so they sit beside the gateway's own routes.
    """
    from pathlib import Path

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    package: Any = require("fastapi_offline", "serve")
    assets = Path(package.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    schema = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=schema,
            title=f"{app.title} - API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _declare_security(app: FastAPI, config: GatewayConfig) -> None:
    """Add the API-key schemes to the OpenAPI schema, so a client learns the auth header."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            if config.auth.enabled:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "BearerKey": {"type": "http", "scheme": "bearer"},
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _extraction_settings(config: GatewayConfig) -> dict[str, object] | None:
    """`ExtractionDetector` keyword arguments, or None when the monitor is off."""
    ext = config.monitoring.extraction
    return (ext.model_dump(exclude={"enabled", "action", "block_seconds"}) if ext.enabled
            else None)


def _configured_keys(config: GatewayConfig) -> KeyStore:
    """The key store of ``[gateway.auth]``; a missing key file or one with no active key is a
    start-up error, since every request would otherwise get a 401 with nothing in the log."""
    from mlwarden.gateway.auth import KeyStore

    auth = config.auth
    if auth.key_file is not None and not auth.key_file.exists():
        raise ConfigError(
            f"[gateway.auth] key_file '{auth.key_file}' does not exist; create it with "
            f"`mlwarden keys create --file {auth.key_file} --name app --scope predict` "
            "or point key_file at the file `mlwarden keys create` wrote"
        )
    store = KeyStore(auth.keys, auth.key_file)
    if store.active() == 0:
        where = f"key file '{auth.key_file}'" if auth.key_file is not None else "[gateway.auth]"
        target = auth.key_file or "mlwarden-keys.json"
        raise ConfigError(
            f"authentication is on but {where} holds no active API key; add one with "
            f"`mlwarden keys create --file {target} --name app --scope predict`"
            + ("" if auth.key_file is not None
               else f" and set [gateway.auth] key_file = \"{target}\"")
            + ", or set [gateway.auth] enabled = false"
        )
    return store


def _query_attack_settings(config: GatewayConfig,
                           extra: dict[str, Any]) -> dict[str, object] | None:
    """`QueryAttackDetector` keyword arguments, or None when the monitor is off; the threshold
    comes from the config, else from the validator file (``fit-validator`` calibrates it)."""
    qa = config.monitoring.query_attack
    if not qa.enabled:
        return None
    threshold = qa.threshold or extra.get("query_attack_threshold")
    if threshold is None:
        if config.validation.validator is None:
            fix = ("set [gateway.validation] validator = \"validator.safetensors\" (the file "
                   "`mlwarden gateway fit-validator` writes; it carries the threshold)")
        else:
            fix = (f"the validator file '{config.validation.validator}' carries none: re-fit it "
                   "with this version's `mlwarden gateway fit-validator`")
        raise ConfigError(
            "[gateway.monitoring.query_attack] has no threshold: " + fix + ", or set "
            "[gateway.monitoring.query_attack] threshold = <distance>, or enabled = false"
        )
    return {"threshold": float(threshold), "k": qa.k, "history": qa.history,
            "hits_to_alert": qa.hits_to_alert}


# -- routes ------------------------------------------------------------------------------


def _install_routes(app: FastAPI, state: GatewayState, pipeline: PredictPipeline) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from mlwarden.gateway.admin import install_admin_routes
    from mlwarden.gateway.encrypted import install_encrypted_routes
    from mlwarden.gateway.errors import GatewayError
    from mlwarden.gateway.pipeline import error_response, internal_error
    from mlwarden.gateway.schemas import ErrorResponse, Health, PredictResponse
    from mlwarden.gateway.validation import request_schema

    config = state.config
    metrics = state.metrics

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
        return internal_error()

    errors = {s: {"model": ErrorResponse} for s in (400, 401, 403, 413, 422, 429)}
    predict_openapi = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema(
                state.spec, config.max_inputs, config.text)}},
        },
        "security": [{"ApiKeyHeader": []}, {"BearerKey": []}] if config.auth.enabled else [],
    }

    @app.post("/v1/predict", response_model=PredictResponse, responses=errors,
              openapi_extra=predict_openapi, summary="Predict a batch of inputs")
    async def predict(request: Request) -> Response:
        # Declares the route for the OpenAPI schema. Requests are answered by
        # `PredictFastPath` in front of the router, which calls `pipeline.respond` too.
        address = request.client.host if request.client else "unknown"
        return await pipeline.respond(request.headers, address, request.stream())

    app.add_middleware(PredictFastPath, respond=pipeline.respond)
    install_admin_routes(app, state, pipeline)
    install_encrypted_routes(app, state, pipeline)  # [gateway.encrypted], off by default

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True,
             summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}},
             summary="Readiness")
    async def readyz() -> Response:
        storage_ok = await state.gate.ping()
        ok = state.ready and state.batcher.running and storage_ok
        reason = "ok" if ok else ("rate-limit storage unreachable" if not storage_ok
                                  else "not ready")
        return JSONResponse({"status": reason, "details": {"runtime": state.runtime.details()}},
                            status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", responses={401: {"model": ErrorResponse},
                                                                   403: {"model": ErrorResponse}})
    async def prometheus(request: Request) -> Response:
        if not config.auth.public_metrics:
            address = request.client.host if request.client else "unknown"
            await pipeline.guard(request.headers, address, "metrics", "/metrics")
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)


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
