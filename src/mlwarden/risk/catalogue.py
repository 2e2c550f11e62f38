"""The threat catalogue: MITRE ATLAS, OWASP ML Top 10 and NCSC principles, as data.

ATLAS comes from ``data/atlas.yaml`` (a subset regenerated from the published
``ATLAS.yaml`` by `mlwarden.risk.extract_atlas`); OWASP and NCSC from
``data/catalogue.yaml``. Every id a rule uses must resolve here, so the threat
model only ever cites ids that exist in the published frameworks.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlwarden.core.errors import ConfigError

Framework = Literal["atlas-tactic", "atlas-technique", "atlas-mitigation", "owasp", "ncsc"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str


class Tactic(_Entry):
    description: str = ""


class Technique(_Entry):
    description: str = ""
    parent: str | None = None
    tactics: list[str] = Field(default_factory=list)
    maturity: str | None = None


class Mitigation(_Entry):
    description: str = ""
    techniques: list[str] = Field(default_factory=list, description="technique ids it mitigates")
    lifecycle: list[str] = Field(default_factory=list)
    category: list[str] = Field(default_factory=list)


class OwaspEntry(_Entry):
    summary: str


class NcscPrinciple(_Entry):
    stage: Literal["design", "development", "deployment", "operation", "end-of-life"]
    summary: str


class SourceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    url: str
    licence: str = ""


class Catalogue(BaseModel):
    """All ids the risk engine may cite, by framework."""

    model_config = ConfigDict(extra="forbid")

    atlas_source: SourceInfo
    owasp_source: SourceInfo
    ncsc_source: SourceInfo
    tactics: dict[str, Tactic]
    techniques: dict[str, Technique]
    mitigations: dict[str, Mitigation]
    owasp: dict[str, OwaspEntry]
    ncsc: dict[str, NcscPrinciple]

    def framework_of(self, entry_id: str) -> Framework | None:
        """Which framework an id belongs to, or None when it is not in the catalogue."""
        tables: list[tuple[Framework, dict[str, Any]]] = [
            ("atlas-technique", self.techniques),
            ("atlas-mitigation", self.mitigations),
            ("atlas-tactic", self.tactics),
            ("owasp", self.owasp),
            ("ncsc", self.ncsc),
        ]
        for name, table in tables:
            if entry_id in table:
                return name
        return None

    def name_of(self, entry_id: str) -> str:
        for table in (self.techniques, self.mitigations, self.tactics, self.owasp, self.ncsc):
            if entry_id in table:
                return table[entry_id].name
        raise KeyError(entry_id)

    def technique_label(self, technique_id: str) -> str:
        """``Parent: Sub-technique`` names, as ATLAS shows them."""
        t = self.techniques[technique_id]
        if t.parent and t.parent in self.techniques:
            return f"{self.techniques[t.parent].name}: {t.name}"
        return t.name

    def mitigates(self, mitigation_id: str, technique_id: str) -> bool:
        """Whether ATLAS lists the mitigation against the technique or its parent."""
        listed = set(self.mitigations[mitigation_id].techniques)
        parent = self.techniques[technique_id].parent if technique_id in self.techniques else None
        return technique_id in listed or (parent is not None and parent in listed)


def _read(name: str) -> Any:
    text = (
        resources.files("mlwarden.risk").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


def catalogue_from_data(atlas: dict[str, Any], other: dict[str, Any]) -> Catalogue:
    """Build a `Catalogue` from the parsed ATLAS subset and the OWASP/NCSC file."""
    try:
        return Catalogue(
            atlas_source=SourceInfo(**atlas["source"]),
            owasp_source=SourceInfo(**other["owasp"]["source"]),
            ncsc_source=SourceInfo(**other["ncsc"]["source"]),
            tactics={t["id"]: Tactic(**t) for t in atlas["tactics"]},
            techniques={t["id"]: Technique(**t) for t in atlas["techniques"]},
            mitigations={m["id"]: Mitigation(**m) for m in atlas["mitigations"]},
            owasp={e["id"]: OwaspEntry(**e) for e in other["owasp"]["entries"]},
            ncsc={e["id"]: NcscPrinciple(**e) for e in other["ncsc"]["entries"]},
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"the threat catalogue data is malformed: {exc}") from None


@lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """The catalogue shipped with mlwarden (parsed once per process)."""
    return catalogue_from_data(_read("atlas.yaml"), _read("catalogue.yaml"))
