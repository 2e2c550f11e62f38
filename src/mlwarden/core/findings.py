"""Findings, check results, figures and the `Report` that carries them.

Checks compute and fill a `Report`; renderers (`mlwarden.report`) only format it.
Figures therefore hold *data* (series, images as nested lists), never pixels
drawn by a check. Everything here is plain pydantic (findings are the stdlib
dataclasses of `mlwarden.core.finding`), so a report round-trips through JSON
exactly and needs no torch.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlwarden.core.finding import Finding, Severity


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


CheckStatus = Literal["passed", "failed", "error", "skipped"]


class CheckResult(_Model):
    """Outcome of one check of an audit (one JUnit test case)."""

    name: str
    status: CheckStatus
    duration_s: float = 0.0
    summary: str = ""


class Series(_Model):
    """One line (or bar group) of a figure."""

    label: str
    x: list[float]
    y: list[float]


class ImageData(_Model):
    """A small image as nested lists (H x W grey or H x W x C in [vmin, vmax])."""

    label: str
    pixels: list[Any]
    vmin: float = 0.0
    vmax: float = 1.0


class Figure(_Model):
    """Data for one plot; the HTML renderer draws it."""

    id: str
    title: str
    kind: Literal["line", "bar", "images"]
    x_label: str = ""
    y_label: str = ""
    series: list[Series] = Field(default_factory=list)
    images: list[ImageData] = Field(default_factory=list)
    caption: str = ""
    log_x: bool = False
    log_y: bool = False
    categories: list[str] = Field(default_factory=list)
    """Names of a bar figure's x positions 0, 1, ... (measures rather than numbers)."""


class Table(_Model):
    """A small table (per-class accuracy, threat register, ...)."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


class Artefact(_Model):
    """A file a check produced (adversarial examples, a lock file, ...)."""

    name: str
    path: str
    media_type: str = "application/octet-stream"
    description: str = ""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class Report(_Model):
    """Everything one run of mlwarden found, in a renderer-independent form."""

    title: str = "mlwarden report"
    tool_version: str = ""
    created_at: str = Field(default_factory=_now)
    subject: dict[str, Any] = Field(default_factory=dict, description="what was assessed")
    findings: list[Finding] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict)
    fail_on: str | None = Field(
        None,
        description="severity at or above which a check fails ('never': none); "
        "None: not recorded (read as the default, see mlwarden.core.verdict)",
    )
    headline: list[str] = Field(
        default_factory=list, description="metric keys a reader should see first (summary cards)"
    )
    figures: list[Figure] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    artefacts: list[Artefact] = Field(default_factory=list)

    def model_post_init(self, __context: Any) -> None:
        if not self.tool_version:
            from mlwarden import __version__

            self.tool_version = __version__

    # -- building ---------------------------------------------------------
    def add(self, *findings: Finding) -> Report:
        self.findings.extend(findings)
        return self

    def merge(self, other: Report) -> Report:
        """Fold another report (e.g. one shard or one check) into this one."""
        self.findings.extend(other.findings)
        self.checks.extend(other.checks)
        self.metrics.update(other.metrics)
        self.headline.extend(k for k in other.headline if k not in self.headline)
        self.figures.extend(other.figures)
        self.tables.extend(other.tables)
        self.artefacts.extend(other.artefacts)
        if self.fail_on is None:
            self.fail_on = other.fail_on
        self.subject.update({k: v for k, v in other.subject.items() if k not in self.subject})
        return self

    # -- querying ---------------------------------------------------------
    def at_or_above(self, severity: Severity | str) -> list[Finding]:
        threshold = Severity(severity)
        return [f for f in self.findings if f.severity >= threshold]

    @property
    def worst_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)

    # -- JSON -------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        return cls.model_validate(json.loads(text))

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path
