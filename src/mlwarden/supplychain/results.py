"""Verdicts, scan rules and the result objects of a scan.

Each rule has a stable id, a severity and the verdict it forces on a file: the verdict
of a file is the worst verdict among its findings (``safe`` when there are none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from mlwarden.core.finding import Finding, Severity

if TYPE_CHECKING:
    from mlwarden.core.findings import Report

__all__ = ["Rule", "RULES", "Verdict", "FileScan", "ScanResult", "make_finding"]

ATLAS_SUPPLY_CHAIN_MODEL = "AML.T0010.003"  # ML Supply Chain Compromise: Model
OWASP_ML06 = "ML06"  # AI Supply Chain Attacks


class Verdict(str, Enum):
    """Per-file verdict, ordered: ``safe`` < ``suspicious`` < ``unreadable`` < ``unsafe``."""

    SAFE = "safe"
    SUSPICIOUS = "suspicious"
    UNREADABLE = "unreadable"
    UNSAFE = "unsafe"

    @property
    def rank(self) -> int:
        return _VERDICT_RANK[self]


_VERDICT_RANK = {v: i for i, v in enumerate(Verdict)}


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    verdict: Verdict


def _r(id_: str, title: str, sev: Severity, verdict: Verdict) -> Rule:
    return Rule(id_, title, sev, verdict)


_C, _H, _M, _L, _I = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO
_SAFE, _SUS, _UNR, _UNS = Verdict.SAFE, Verdict.SUSPICIOUS, Verdict.UNREADABLE, Verdict.UNSAFE

RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        _r("MLW-SCAN-001", "Pickle imports a known-dangerous callable", _C, _UNS),
        _r("MLW-SCAN-002", "Pickle imports a global that is not on the allowlist", _H, _SUS),
        _r("MLW-SCAN-003", "Pickle imports a global whose name is computed", _C, _UNS),
        _r("MLW-SCAN-004", "Pickle calls a callable it computed", _H, _SUS),
        _r("MLW-SCAN-005", "Pickle sets attributes on an imported object", _C, _UNS),
        _r("MLW-SCAN-006", "Pickle uses the copyreg extension registry", _H, _SUS),
        _r("MLW-SCAN-010", "Pickle is malformed or truncated", _H, _UNR),
        _r("MLW-SCAN-011", "Pickle exceeds a resource limit (possible pickle bomb)", _H, _UNR),
        _r("MLW-SCAN-012", "Pickle found inside a file of an unknown format", _H, _UNR),
        _r("MLW-SCAN-013", "Pickle data outside the members a loader reads", _H, _SUS),
        _r("MLW-SCAN-020", "Zip archive is inconsistent or corrupt", _H, _UNR),
        _r("MLW-SCAN-021", "Zip member is too large to expand (possible zip bomb)", _H, _UNR),
        _r("MLW-SCAN-022", "Zip archive hides data outside its central directory", _H, _UNR),
        _r("MLW-SCAN-023", "Archive members that a loader's name lookup confuses", _H, _SUS),
        _r("MLW-SCAN-024", "File is also a readable archive (a polyglot)", _H, _SUS),
        _r("MLW-SCAN-030", "safetensors header is invalid", _H, _UNR),
        _r("MLW-SCAN-031", "NumPy file is invalid", _H, _UNR),
        _r("MLW-SCAN-034", "Tensor data holds another container or a pickle", _H, _SUS),
        _r("MLW-SCAN-032", "NumPy object array: loading it needs allow_pickle=True", _M, _SUS),
        _r("MLW-SCAN-033", "Legacy PyTorch file layout does not match its storages", _H, _UNR),
        _r("MLW-SCAN-040", "ONNX external data path escapes the model folder", _C, _UNS),
        _r("MLW-SCAN-041", "ONNX model uses a custom operator domain", _M, _SUS),
        _r("MLW-SCAN-042", "ONNX model is malformed", _H, _UNR),
        _r("MLW-SCAN-043", "ONNX external data file is missing or too short", _M, _UNR),
        _r(
            "MLW-SCAN-050", "Keras model contains a Lambda layer (serialised Python code)", _C, _UNS
        ),
        _r("MLW-SCAN-051", "Keras model references custom (non-Keras) objects", _M, _SUS),
        _r("MLW-SCAN-052", "torch.export archive contains native code", _C, _UNS),
        _r("MLW-SCAN-053", "TorchScript archive: its code runs on load", _M, _SUS),
        _r("MLW-SCAN-054", "Archive member is native executable code", _C, _UNS),
        _r("MLW-SCAN-056", "Keras config imports a known-dangerous callable", _C, _UNS),
        _r(
            "MLW-SCAN-055",
            "TorchScript code calls operators that reach files or processes",
            _C,
            _UNS,
        ),
        _r("MLW-SCAN-060", "File cannot be read", _H, _UNR),
        _r("MLW-SCAN-061", "Unrecognised format (not parsed; fails closed)", _M, _UNR),
        _r("MLW-SCAN-062", "Compressed stream expands beyond the limit", _H, _UNR),
        _r("MLW-SCAN-063", "Data file parsed as text or JSON", _I, _SAFE),
        _r("MLW-SCAN-070", "Pinned file changed", _H, _SUS),
        _r("MLW-SCAN-071", "File not in the lock file appeared", _H, _SUS),
        _r("MLW-SCAN-072", "Pinned file is missing", _H, _SUS),
        _r("MLW-SCAN-080", "GGUF file is malformed", _H, _UNR),
        _r("MLW-SCAN-081", "Chat template uses Jinja constructs that can run code", _C, _UNS),
        _r("MLW-SCAN-082", "Chat template present (rendered by the loader)", _I, _SAFE),
    )
}

_ATTACK_RULES = {
    "MLW-SCAN-00",
    "MLW-SCAN-01",
    "MLW-SCAN-04",
    "MLW-SCAN-05",
    "MLW-SCAN-07",
    "MLW-SCAN-08",
}


def make_finding(rule_id: str, location: str, detail: str, **evidence: Any) -> Finding:
    """A `Finding` for ``rule_id`` at ``location`` ("file[:member][@offset]")."""
    rule = RULES[rule_id]
    related = any(rule_id.startswith(p) for p in _ATTACK_RULES) or rule.verdict is not Verdict.SAFE
    return Finding(
        id=rule.id,
        title=rule.title,
        severity=rule.severity,
        detail=detail,
        check="scan",
        evidence={"verdict": rule.verdict.value, **evidence},
        atlas=[ATLAS_SUPPLY_CHAIN_MODEL] if related else [],
        owasp=[OWASP_ML06] if related else [],
        location=location,
    )


def verdict_of(findings: list[Finding]) -> Verdict:
    worst = Verdict.SAFE
    for f in findings:
        rule = RULES.get(f.id)
        v = rule.verdict if rule else Verdict.SUSPICIOUS
        if v.rank > worst.rank:
            worst = v
    return worst


@dataclass
class FileScan:
    """The scan of one file: what it is, the verdict, and the findings that explain it."""

    path: str
    format: str
    verdict: Verdict
    sha256: str | None
    size: int
    findings: list[Finding] = field(default_factory=list)
    members: int = 0  # archive members or pickles looked at

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "verdict": self.verdict.value,
            "sha256": self.sha256,
            "size": self.size,
            "findings": [f.to_dict(exclude_none=True) for f in self.findings],
        }


@dataclass
class ScanResult:
    """The scan of every file under the given paths, plus lock-file findings."""

    files: list[FileScan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # not tied to one scanned file
    roots: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        worst = verdict_of(self.findings)
        for f in self.files:
            if f.verdict.rank > worst.rank:
                worst = f.verdict
        return worst

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for f in self.files:
            out[f.verdict.value] += 1
        return out

    def all_findings(self) -> list[Finding]:
        return [f for fs in self.files for f in fs.findings] + list(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "files": [f.to_dict() for f in self.files],
            "findings": [f.to_dict(exclude_none=True) for f in self.findings],
        }

    def add_to_report(self, report: Report) -> Report:
        """Findings, a per-file table and ``scan.*`` metrics into ``report``."""
        from mlwarden.core.findings import Table

        report.add(*self.all_findings())
        report.tables.append(
            Table(
                id="scan-files",
                title="Model files scanned",
                columns=["path", "format", "verdict", "size", "sha256", "findings"],
                rows=[
                    [f.path, f.format, f.verdict.value, f.size, f.sha256 or "", len(f.findings)]
                    for f in self.files
                ],
            )
        )
        counts = self.counts()
        report.metrics.update(
            {
                "scan.files": len(self.files),
                "scan.safe": counts["safe"],
                "scan.suspicious": counts["suspicious"],
                "scan.unreadable": counts["unreadable"],
                "scan.unsafe": counts["unsafe"],
                "scan.verdict": self.verdict.value,
            }
        )
        report.headline.append("scan.verdict")
        report.subject.setdefault("scanned_paths", list(self.roots))
        return report

    def to_report(self) -> Report:
        """A `Report` for the shared renderers (SARIF, Markdown, HTML, JUnit)."""
        from mlwarden.core.findings import Report

        return self.add_to_report(Report(title="mlwarden scan"))
