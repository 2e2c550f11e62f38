"""Command-line flags as overrides of a capability's settings model.

A command and its audit check share one pydantic settings model, which holds every
default and every range. A command's flags therefore default to ``None`` ("not
given") and only the flags the user typed override the model's defaults; the model
validates them, and a bad value becomes one line that names the flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlwarden.core.errors import ParameterError

S = TypeVar("S", bound=BaseModel)


def settings_from_flags(
    model: type[S], flags: Mapping[str, Any], *, names: Mapping[str, str] | None = None
) -> S:
    """``model`` built from the ``flags`` (field name -> value) that were given: not None and,
    for repeatable flags, not an empty list.

    ``names`` maps a field to its flag where they differ (``methods`` -> ``--method``), for
    the error message.
    """
    given = {field: value for field, value in flags.items() if value is not None and value != []}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = (names or {}).get(field) or f"--{field.replace('_', '-')}"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ParameterError(f"{flag}: {message}") from None


def default_of(model: type[BaseModel], name: str) -> str:
    """The default of field ``name`` as ``--help`` shows it (the settings model holds it)."""
    field = model.model_fields[name]
    value = field.get_default(call_default_factory=True)
    return " ".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)
