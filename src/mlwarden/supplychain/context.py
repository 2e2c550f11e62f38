"""The state one file scan carries through the format scanners: limits, policy, findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlwarden.core.finding import Finding
from mlwarden.supplychain.pickle_reader import PickleLimits
from mlwarden.supplychain.policy import Policy
from mlwarden.supplychain.results import make_finding


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep hostile files from exhausting time or memory."""

    pickle: PickleLimits = PickleLimits()
    max_member_bytes: int = 1 << 30  # largest archive member we expand into memory
    max_compression_ratio: float = 200.0  # above this (and > 16 MiB) a member is a bomb
    max_safetensors_header: int = 100 << 20  # the safetensors library's own limit
    max_nesting: int = 3  # archives inside archives
    max_json_bytes: int = 64 << 20
    max_findings_per_kind: int = 50  # one file can have thousands of identical findings
    verify_data_crc: bool = False  # also CRC raw tensor members larger than 1 MiB (deep scan)


@dataclass
class ScanContext:
    """Where findings of one file go; ``member`` names the archive member being read."""

    label: str
    policy: Policy
    limits: ScanLimits = field(default_factory=ScanLimits)
    findings: list[Finding] = field(default_factory=list)
    members: int = 0
    depth: int = 0
    torchscript: bool = False  # inside a TorchScript archive: __torch__ names are not Python
    _counts: dict[str, int] = field(default_factory=dict)

    def location(self, member: str | None = None, offset: int | None = None) -> str:
        loc = self.label
        if member:
            loc += f":{member}"
        if offset is not None and offset >= 0:
            loc += f"@{offset}"
        return loc

    def add(
        self,
        rule_id: str,
        detail: str,
        *,
        member: str | None = None,
        offset: int | None = None,
        **evidence: Any,
    ) -> None:
        n = self._counts.get(rule_id, 0) + 1
        self._counts[rule_id] = n
        if n > self.limits.max_findings_per_kind:
            return
        ev = {k: v for k, v in evidence.items() if v is not None}
        if member:
            ev["member"] = member
        if offset is not None and offset >= 0:
            ev["offset"] = offset
        self.findings.append(make_finding(rule_id, self.location(member, offset), detail, **ev))

    def finish(self) -> None:
        """Say how many findings of a kind were left out."""
        for rule_id, n in self._counts.items():
            extra = n - self.limits.max_findings_per_kind
            if extra > 0:
                self.findings.append(
                    make_finding(
                        rule_id,
                        self.label,
                        f"{extra} more findings of this kind were not listed",
                        omitted=extra,
                    )
                )
