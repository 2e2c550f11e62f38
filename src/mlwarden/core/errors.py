"""The one exception hierarchy of mlwarden.

Every error a user can cause carries a message they can act on. The CLI prints
``str(error)`` on one line, with no traceback, and exits with ``exit_code``::

    MlwardenError                 exit 2  base class
    ├── ConfigError               exit 2  invalid mlwarden.toml or flag
    ├── ParameterError            exit 2  invalid hyper-parameter (also a ValueError)
    ├── InputError                exit 2  a file or value given by the user is unusable
    │   ├── DataError             exit 2  data: missing keys, wrong shape, NaN, bad labels
    │   └── ModelLoadError        exit 2  model: missing file, corrupt file, bad factory path
    ├── DependencyError           exit 2  an optional extra is not installed
    ├── OracleError               exit 2  a query oracle failed or answered nonsense
    └── UnsafeArtefactError       exit 3  a model file was refused by the safety gate
"""

from __future__ import annotations


class MlwardenError(Exception):
    """Base of every error mlwarden raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(MlwardenError):
    """The configuration file or a command-line flag is invalid."""


class ParameterError(MlwardenError, ValueError):
    """A hyper-parameter is out of its valid range; the message names the parameter."""


class InputError(MlwardenError):
    """Something the user handed in (a path, a value) cannot be used."""


class DataError(InputError):
    """A data set is unusable: missing keys, wrong shape, non-finite values, bad labels."""


class ModelLoadError(InputError):
    """A model cannot be loaded: missing or corrupt file, unknown format, bad factory."""


class DependencyError(MlwardenError):
    """An optional dependency is missing; the message names the extra to install."""


class OracleError(MlwardenError):
    """A query oracle (local, ONNX or HTTP) failed or returned malformed output."""


class UnsafeArtefactError(MlwardenError):
    """A model file was refused because it could execute code or could not be verified."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message: third-party errors (torch, zip,
    onnxruntime) are often pages long, and a user gets one line."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise a `DependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"this feature needs the '{module}' package",
            hint=f"pip install 'mlwarden[{extra}]'",
        ) from exc
