"""``mlwarden.toml``: one validated configuration for the audit, the checks and the gateway.

Unknown keys are errors that name the key (pydantic ``extra="forbid"`` everywhere);
the ``[checks.<name>]`` tables are validated against the settings model each check
registered (`mlwarden.audit.registry`), and ``[gateway]`` against the gateway's own
model when it is used. Relative paths are resolved against the file's folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlwarden.core.errors import ConfigError
from mlwarden.core.spec import SpecOverride
from mlwarden.core.verdict import DEFAULT_FAIL_ON, FAIL_ON_CHOICES

FORMATS = ("html", "json", "sarif", "junit", "md")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: str = Field(description=".pt2, .onnx, or a weights file used with factory")
    factory: str | None = Field(None, description="package.module:callable building the module")
    device: str = "auto"


class DataSection(_Section):
    source: str = Field(description=".npz, .npy, .csv, an image folder, digits or breast_cancer; "
                        ".jsonl, .csv or .tsv text for a text model")
    limit: int | None = Field(None, gt=0, description="use the first N samples")
    label_column: str = "label"
    text_column: str = Field("text", description="the text column of text data (text models)")


class AuditSection(_Section):
    title: str = "mlwarden audit"
    fail_on: str = DEFAULT_FAIL_ON
    formats: list[str] = Field(default_factory=lambda: ["html", "json", "sarif"])
    output_dir: str = "mlwarden-report"
    seed: int = 0
    batch_size: int = Field(256, gt=0)
    ray: str | None = Field(
        None,
        description="run sample-parallel checks on Ray: auto, local, HOST:PORT or "
        "ray://HOST:PORT (docs/distributed.md); unset: in this process",
    )
    shard_size: int | None = Field(
        None, gt=0, description="samples per Ray task (default 128); fixes the shard seeds"
    )

    @field_validator("ray")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from mlwarden.audit.distributed import check_address
        from mlwarden.core.errors import ConfigError

        try:
            return check_address(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("fail_on")
    @classmethod
    def _severity(cls, v: str) -> str:
        if v not in FAIL_ON_CHOICES:
            raise ValueError(f"must be one of {', '.join(FAIL_ON_CHOICES)}")
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
        return v


class SupplyChainSection(_Section):
    """``[supplychain]``: what the load gate demands of a model before it scans it."""

    require_signature: bool = Field(
        False, description="refuse any model without a valid signature (exit 3)"
    )
    public_key: str | None = Field(
        None, description="PEM public key (P-256/384/521) the signature must verify with"
    )
    identity: str | None = Field(None, description="Sigstore: the signer's identity (e-mail)")
    issuer: str | None = Field(None, description="Sigstore: the OIDC issuer of that identity")
    key_file: str | None = Field(
        None, description="AES-256 key file that decrypts encrypted models (mlwarden encrypt)"
    )

    @model_validator(mode="after")
    def _verifier_named(self) -> SupplyChainSection:
        if (self.identity is None) != (self.issuer is None):
            raise ValueError("identity and issuer go together (Sigstore verification)")
        if self.require_signature and self.public_key is None and self.identity is None:
            raise ValueError(
                "require_signature needs public_key (or identity and issuer for Sigstore)"
            )
        return self


class MlwardenConfig(_Section):
    """The whole file. ``checks`` maps a check name to its validated settings."""

    model: ModelSection | None = None
    data: DataSection | None = None
    spec: SpecOverride | None = Field(
        None, description="the input-spec fields the model file does not say (or gets wrong)"
    )
    audit: AuditSection = Field(default_factory=AuditSection)
    supplychain: SupplyChainSection = Field(default_factory=SupplyChainSection)
    checks: dict[str, Any] = Field(default_factory=dict)
    gateway: dict[str, Any] | None = None
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def resolve(self, path: str | None) -> str | None:
        """A path from the file, made absolute relative to the file's folder.

        Built-in data set names (``digits``, ``rotten_tomatoes``) and absolute paths pass
        unchanged.
        """
        if path is None:
            return None
        from mlwarden.io.dataset import BUILTIN
        from mlwarden.io.text_builtin import BUILTIN_TEXT

        if path in BUILTIN or path in BUILTIN_TEXT or Path(path).is_absolute():
            return path
        return str((self.base_dir / path).resolve())


def format_validation_error(exc: ValidationError, prefix: str = "", *, under: str = "") -> str:
    """One line naming the first offending key (and how many more there are).

    ``under`` is the table the validated data came from, so keys read the same whether
    the whole file or only that table was validated (``spec.bounds``).
    """
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in (*([under] if under else []), *first["loc"])) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "missing required key"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{prefix}{prefix and ': '}{loc}: {msg}{more}"


def validate_checks(raw: dict[str, Any], where: str = "mlwarden.toml") -> dict[str, Any]:
    """Validate each ``[checks.<name>]`` table against the model its check registered."""
    from mlwarden.audit.registry import check_spec

    out: dict[str, Any] = {}
    for name, table in raw.items():
        spec = check_spec(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: checks.{name} must be a table")
        try:
            out[name] = spec.config.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"{where}: checks.{name}")) from None
    return out


def parse_config(
    data: dict[str, Any], *, base_dir: Path | None = None, where: str = "config"
) -> MlwardenConfig:
    """Validate an already-parsed TOML document."""
    try:
        cfg = MlwardenConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    cfg.checks = validate_checks(cfg.checks, where)
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def read_spec_file(path: str | Path) -> SpecOverride:
    """The input spec of a JSON file (``--spec``); problems name the file and the key.

    Any subset of the `InputSpec` fields: what is left out comes from the model file
    (`mlwarden.core.spec.complete_spec`).
    """
    import json

    path = Path(path)
    try:
        return SpecOverride.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(f"spec file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"spec file '{path}' is a directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spec file '{path}' is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


DEFAULT_CONFIG = "mlwarden.toml"


def find_config(path: str | Path | None) -> Path | None:
    """``path`` if given, else ``./mlwarden.toml`` when it exists, else None."""
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def spec_from_config(path: str | Path) -> SpecOverride | None:
    """The ``[spec]`` table of a configuration file (any subset of the fields); None if absent.

    Reads only that table, so a command that needs nothing else from the file does not
    depend on its other sections (the audit validates those).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file '{path}' does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    table = data.get("spec")
    if table is None:
        return None
    try:
        return SpecOverride.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path.name, under="spec")) from None


def resolve_spec(
    spec_file: str | Path | None, config: str | Path | None
) -> SpecOverride | None:
    """The spec a command should use: ``--spec`` first, then ``[spec]`` of the configuration.

    Either is merged over what the model file says when the model loads.
    """
    if spec_file is not None:
        return read_spec_file(spec_file)
    found = find_config(config)
    return spec_from_config(found) if found is not None else None


def load_config(path: str | Path) -> MlwardenConfig:
    """Read and validate ``mlwarden.toml``; every problem is a `ConfigError` naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file '{path}' does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return parse_config(data, base_dir=path.resolve().parent, where=path.name)
