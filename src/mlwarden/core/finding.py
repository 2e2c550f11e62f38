"""`Severity` and `Finding`: the one observation every check makes.

Kept apart from `mlwarden.core.findings` (the pydantic `Report` and its parts) and
free of pydantic on purpose: the scanner produces findings on every CLI start, and
``mlwarden scan`` on one small file must start about as fast as a bare pickle
scanner. Importing pydantic and building its schemas costs ~0.2 s; a stdlib
dataclass costs nothing. The `Report` still validates findings (pydantic accepts
stdlib dataclasses as fields), so a report round-trips through JSON unchanged.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from mlwarden.core.errors import ConfigError


class Severity(str, Enum):
    """Severity of a finding, ordered from ``info`` to ``critical``."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_RANK = {s: i for i, s in enumerate(Severity)}

#: what ``--fail-on`` accepts: a severity, or ``never`` to disable failing
FAIL_ON_CHOICES = (*(s.value for s in Severity), "never")


def fail_threshold(value: str | Severity | None) -> Severity | None:
    """``fail_on`` as a severity; ``None`` (or ``"never"``) disables failing.

    Raises `ConfigError` naming the accepted values for anything else.
    """
    if value is None or isinstance(value, Severity):
        return value
    name = str(value).strip().lower()
    if name == "never":
        return None
    try:
        return Severity(name)
    except ValueError:
        raise ConfigError(
            f"--fail-on must be one of {', '.join(FAIL_ON_CHOICES)}, got '{value}'"
        ) from None


@dataclasses.dataclass
class Finding:
    """One observation a check makes, with the threat ids it relates to.

    ``id`` is the stable rule id (e.g. ``MLW-EVA-001``); ``check`` the check that
    emitted it; ``atlas``/``owasp`` the MITRE ATLAS and OWASP ML Top 10 ids;
    ``location`` the file, member or endpoint concerned.
    """

    id: str
    title: str
    severity: Severity
    detail: str = ""
    check: str = ""
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    atlas: list[str] = dataclasses.field(default_factory=list)
    owasp: list[str] = dataclasses.field(default_factory=list)
    location: str | None = None

    def __post_init__(self) -> None:
        # the checks a pydantic model made on construction, kept: a wrong severity or a
        # non-string id is a bug of the caller, caught where it is made
        try:
            self.severity = Severity(self.severity)
        except ValueError:
            raise ValueError(f"unknown severity {self.severity!r}") from None
        for name in ("id", "title", "detail", "check"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Finding.{name} must be a string")
        self.evidence = dict(self.evidence)
        self.atlas = list(self.atlas)
        self.owasp = list(self.owasp)

    def to_dict(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (severity as its name), as the report's JSON holds it."""
        data = dataclasses.asdict(self)
        data["severity"] = self.severity.value
        if exclude_none:
            data = {k: v for k, v in data.items() if v is not None}
        return data
