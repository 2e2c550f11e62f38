"""`GatewayConfig`: the ``[gateway]`` section of ``mlwarden.toml``, validated by pydantic.

Every sub-table forbids unknown keys, so a typo (``rate_limt``) is an error that names
the key instead of a protection silently switched off. Rates read like what they mean
(``"100/minute"``) and storage is chosen by URI (``memory://``, ``redis://host:6379``),
as in the ``limits`` library that enforces them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlwarden.core.errors import ConfigError

OutputLevel = Literal["labels", "top_k", "rounded", "probabilities", "perturbed"]
CheckAction = Literal["reject", "flag", "log"]
MonitorAction = Literal["log", "throttle", "block"]
SCOPES = ("predict", "metrics", "admin")
_RATE = re.compile(
    r"\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?"
    r"(\s*[;,]\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?)*"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyEntry(_Section):
    """One API key as stored: public prefix, hash of the secret, scopes, output detail."""

    prefix: str = Field(pattern=r"^[A-Za-z0-9]{4,32}$")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    name: str = ""
    scopes: tuple[str, ...] = ("predict",)
    output: OutputLevel | None = None
    revoked: bool = False
    created: str = ""

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; known scopes: {list(SCOPES)}")
        return v


class AuthConfig(_Section):
    """API keys inline (``keys``) and/or in a key file managed by ``mlwarden keys``."""

    enabled: bool = True
    key_file: Path | None = None
    keys: list[KeyEntry] = Field(default_factory=list)
    public_metrics: bool = Field(
        default=False, description="serve /metrics without a key (for a scraper on a private net)"
    )


def _check_rate(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        from limits import parse_many
    except ImportError:  # the serve extra is absent: check the form only
        if not _RATE.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not a rate like '100/minute' or '10/second'") from None
        return v
    try:
        parse_many(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a rate like '100/minute' or '10/second'") from None
    return v


class RateLimitConfig(_Section):
    """A sustained rate and a burst, per API key and per client address."""

    enabled: bool = True
    storage: str = "memory://"
    strategy: Literal["auto", "gcra", "moving-window", "sliding-window-counter",
                      "fixed-window"] = Field(
        default="auto",
        description="auto: GCRA in memory, moving window (exact, atomic) in Redis",
    )
    per_key: str | None = "3000/minute"
    per_key_burst: str | None = "100/second"
    per_address: str | None = "6000/minute"
    per_address_burst: str | None = "200/second"
    key_prefix: str = "mlwarden"

    _rates = field_validator("per_key", "per_key_burst", "per_address", "per_address_burst")(
        classmethod(lambda cls, v: _check_rate(v))
    )

    @field_validator("storage")
    @classmethod
    def _storage_uri(cls, v: str) -> str:
        if not (v.startswith("memory://") or v.startswith(("redis://", "rediss://"))):
            raise ValueError(f"storage must be 'memory://' or 'redis://host:port', got {v!r}")
        return v


class ValidationConfig(_Section):
    """Request limits and the action per check (``reject``, ``flag`` or ``log``)."""

    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_batch: int = Field(default=256, gt=0)
    bounds: CheckAction = "reject"
    ood: CheckAction = "flag"
    validator: Path | None = Field(
        default=None, description="file written by `mlwarden gateway fit-validator`"
    )


class TextConfig(_Section):
    """Per-text limits of a text model's requests (a tensor model has no use for them).

    Characters are counted first, before any tokenizer runs, so a huge text costs nothing;
    tokens are counted with the model's own tokenizer in the batch step, special tokens
    included.
    """

    max_chars: int = Field(default=5000, gt=0, description="characters per text")
    max_tokens: int | None = Field(
        default=None, gt=1, description="tokens per text, special tokens included "
        "(default, and at most: the model's own limit, spec.max_tokens)"
    )
    over_long: Literal["refuse", "truncate"] = Field(
        default="refuse", description="a text over max_tokens: refuse the request (422) or "
        "cut the text at max_tokens, as the model itself does offline"
    )
    padding_slack: float = Field(
        default=0.2, ge=0, description="a batch's texts are padded per group of similar "
        "length; a new group (forward pass) begins where padding would add more than this "
        "share of the group's tokens"
    )

    def token_limit(self, model_max: int) -> int:
        """Tokens per text for a model that takes ``model_max``: ``max_tokens`` if set (a
        `ConfigError` if above the model's limit, which it could not read), else the model's."""
        if self.max_tokens is None:
            return model_max
        if self.max_tokens > model_max:
            raise ConfigError(f"[gateway.text] max_tokens = {self.max_tokens} exceeds the "
                              f"model's limit of {model_max} tokens; set at most {model_max} "
                              "or remove it")
        return self.max_tokens


class HardeningConfig(_Section):
    """Output detail for keys that do not name their own (``output`` of a key)."""

    default_output: OutputLevel = "rounded"
    top_k: int = Field(default=3, ge=1)
    decimals: int = Field(default=2, ge=0, le=6)
    perturb_beta: float = Field(default=0.7, gt=0)
    perturb_gamma: float = Field(default=0.4, gt=0)


class ExtractionMonitorConfig(_Section):
    """PRADA (Juuti et al., 2019): Shapiro-Wilk test on minimum query distances, plus the
    share of a client's queries that the OOD validator flags."""

    enabled: bool = True
    action: MonitorAction = "block"
    block_seconds: int | None = Field(
        default=None, gt=0, description="how long its block or throttle lasts "
        "(default: monitoring.block_seconds)"
    )
    delta: float = Field(default=0.90, gt=0, lt=1)
    min_samples: int = Field(default=100, ge=20)
    window: int = Field(default=500, ge=20)
    max_growing_set: int = Field(default=2000, ge=10)
    max_ood_rate: float = Field(default=0.25, gt=0, le=1)
    ood_min_samples: int = Field(default=50, ge=10)


class QueryAttackMonitorConfig(_Section):
    """Stateful detection (Chen, Carlini & Wagner, 2019): k-NN distance to past queries."""

    enabled: bool = True
    action: MonitorAction = "block"
    block_seconds: int | None = Field(default=None, gt=0)
    k: int = Field(default=10, ge=1)
    history: int = Field(default=5000, ge=10)
    threshold: float | None = Field(
        default=None, description="k-NN distance below which a query counts as a probe; "
        "default: calibrated by fit-validator"
    )
    hits_to_alert: int = Field(default=25, ge=1)


class FailedAuthMonitorConfig(_Section):
    """Brute-force guard: ``max_failures`` failed authentications from one address within
    ``window_seconds`` raise a ``failed_auth`` alert against the address."""

    enabled: bool = True
    action: MonitorAction = "block"
    block_seconds: int | None = Field(default=900, gt=0)
    max_failures: int = Field(default=50, ge=1)
    window_seconds: int = Field(default=60, ge=1)


class MonitoringConfig(_Section):
    extraction: ExtractionMonitorConfig = Field(default_factory=ExtractionMonitorConfig)
    query_attack: QueryAttackMonitorConfig = Field(default_factory=QueryAttackMonitorConfig)
    failed_auth: FailedAuthMonitorConfig = Field(default_factory=FailedAuthMonitorConfig)
    throttle_rate: str = "60/minute"
    block_seconds: int = Field(default=3600, gt=0)
    max_clients: int = Field(default=10_000, ge=1)
    repeat_window: int = Field(
        default=5000, ge=0, description="exact repeats of a client's last N distinct queries "
        "(retries, probes) are not fed to the monitors; 0 feeds them everything"
    )
    storage: str = Field(
        default="auto", description="where the monitors' per-client histories live: auto "
        "(rate_limit.storage: shared by replicas on Redis), memory:// (each replica its own, "
        "e.g. behind routing that is sticky by key), or redis://host:port"
    )
    shared_entries: int = Field(
        default=10_000, ge=1, description="with Redis storage: batches of each client kept in "
        "the shared monitor log that replicas replay (a replica that missed more rebuilds "
        "the client's monitors from those kept)"
    )
    shared_ttl_seconds: int = Field(
        default=86_400, gt=0, description="with Redis storage: a client's shared monitor "
        "log expires this long after its last query"
    )

    @field_validator("storage")
    @classmethod
    def _monitor_storage(cls, v: str) -> str:
        if v != "auto" and not v.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(f"storage must be 'auto', 'memory://' or 'redis://host:port', "
                             f"got {v!r}")
        return v

    def storage_uri(self, rate_limit_storage: str) -> str:
        """The monitors' storage: their own, or the rate limits' for ``auto``."""
        return rate_limit_storage if self.storage == "auto" else self.storage

    def block_seconds_for(self, detector: str) -> int:
        """How long a block or throttle raised by ``detector`` lasts."""
        own = getattr(self, detector).block_seconds
        return int(own if own is not None else self.block_seconds)

    _rate = field_validator("throttle_rate")(classmethod(lambda cls, v: _check_rate(v)))


class AuditLogConfig(_Section):
    """The audit trail; entries are authenticated with the key from ``key_file``, else from
    the environment variable ``key_env`` (``KEY_ID:HEX_SECRET``); never from this file."""

    enabled: bool = True
    path: Path = Path("mlwarden-audit.jsonl")
    include_inputs: bool = False
    fsync: bool = False
    key_file: Path | None = Field(
        default=None, description="audit keyring written by `mlwarden audit-log keygen`"
    )
    key_env: str = "MLWARDEN_AUDIT_KEY"
    require_key: bool = Field(
        default=False, description="refuse to start without an audit key (default: warn)"
    )
    head_file: Path | None = Field(
        default=None, description="checkpoints of the chain's head, on another volume: "
        "detects truncation up to the last checkpoint"
    )
    head_every: int = Field(default=1000, ge=1)


class BatchingConfig(_Section):
    enabled: bool = True
    max_batch_size: int = Field(default=64, gt=0)
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    worker_thread: bool | Literal["auto"] = Field(
        default="auto",
        description="run the model in a worker thread (the event loop keeps accepting during "
        "a forward pass); false runs it on the loop, which avoids thread hand-offs on small "
        "CPU models; auto: a worker thread only for large models or several torch threads",
    )
    torch_threads: int | Literal["auto"] = Field(
        default="auto",
        description="torch intra-op threads; auto: 1, or half the available cores (at most 8) "
        "for a model over 20M parameters on more than 2 cores",
    )

    @field_validator("torch_threads")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 1:
            raise ValueError("must be 'auto' or a positive number of threads")
        return v


class EncryptedConfig(_Section):
    """``/v1/encrypted/*`` and ``/v1/predict-encrypted``: a head evaluated on CKKS ciphertexts
    (`mlwarden.gateway.encrypted`).

    Off by default: the server sees neither inputs nor scores, so input validation, output
    hardening (top-k, rounding, perturbation) and the extraction and query-attack monitors
    cannot act on these requests, only auth and rate limits; a public context is tens of
    MB and a request costs about a second of CPU. Turn it on knowingly, with a rate limit.
    """

    enabled: bool = False
    head: Path | None = Field(
        default=None, description="the head file (`HEHead.save`, .npz) evaluated on ciphertexts"
    )
    max_context_bytes: int = Field(
        default=96 * 2**20, gt=0,
        description="largest public context accepted (about 35 MB for a linear head, 50 MB "
        "for a degree-2 head; a degree-3 head needs about 200 MB)",
    )
    max_ciphertext_bytes: int = Field(default=8 * 2**20, gt=0)
    max_contexts: int = Field(
        default=32, gt=0, description="public contexts kept in memory (least recently used go)"
    )


class GatewayConfig(_Section):
    """The whole ``[gateway]`` section."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model_name: str | None = None
    graceful_shutdown_seconds: float = Field(default=10.0, ge=0)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    hardening: HardeningConfig = Field(default_factory=HardeningConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    audit_log: AuditLogConfig = Field(default_factory=AuditLogConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    encrypted: EncryptedConfig = Field(default_factory=EncryptedConfig)
    docs: bool = Field(
        default=False, description="serve Swagger UI at /docs and Redoc at /redoc from local "
        "assets "
        "(fastapi-offline's files; no CDN, no key needed: they show only the public schema); "
        "/openapi.json is always served"
    )

    @property
    def max_inputs(self) -> int:
        """Inputs one request may carry: ``validation.max_batch``, or less when a rate limit
        (which counts inputs) could never admit more. One value for the check and the schema."""
        limit = self.validation.max_batch
        rl = self.rate_limit
        if rl.enabled:
            from limits import parse_many

            for rate in (rl.per_key, rl.per_key_burst, rl.per_address, rl.per_address_burst):
                if rate is not None:
                    limit = min(limit, *(item.amount for item in parse_many(rate)))
        return limit

    @classmethod
    def from_dict(cls, data: dict[str, object], *, where: str = "gateway") -> GatewayConfig:
        """Validate ``data``; a `ConfigError` names every bad key as ``gateway.x.y``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, where)) from None


def _format_errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (where, *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


@dataclass(frozen=True)
class ServeModel:
    """What ``mlwarden serve`` loads: the ``[model]`` table with its path made absolute."""

    path: Path
    factory: str | None = None
    device: str = "auto"


def load_serve_config(path: Path) -> tuple[ServeModel, GatewayConfig]:
    """Read ``[model]`` and ``[gateway]`` of an ``mlwarden.toml`` for ``mlwarden serve``.

    The file is validated as a whole by `mlwarden.config.parse_config` (the same file the
    audit reads; its ``[spec]`` table is `mlwarden.config.resolve_spec`'s), then
    ``[gateway]`` against `GatewayConfig`. Relative paths in the file are resolved against
    the file's directory.
    """
    from mlwarden.config import parse_config

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    cfg = parse_config(data, base_dir=path.resolve().parent, where=path.name)
    if cfg.model is None:
        raise ConfigError(f"config file '{path}' has no [model] section with 'path'")
    gateway = GatewayConfig.from_dict(cfg.gateway or {})
    base = path.parent
    model = ServeModel(base / cfg.model.path, cfg.model.factory, cfg.model.device)
    auth, val, audit = gateway.auth, gateway.validation, gateway.audit_log
    if auth.key_file is not None and not auth.key_file.is_absolute():
        auth.key_file = base / auth.key_file
    if val.validator is not None and not val.validator.is_absolute():
        val.validator = base / val.validator
    if not audit.path.is_absolute():
        audit.path = base / audit.path
    for name in ("key_file", "head_file"):
        value = getattr(audit, name)
        if value is not None and not value.is_absolute():
            setattr(audit, name, base / value)
    return model, gateway
