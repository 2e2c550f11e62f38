"""SARIF 2.1.0 for GitHub code scanning and other SARIF consumers.

Follows the OASIS SARIF 2.1.0 standard and GitHub's documented subset: one run, rules
built from the finding ids with ``properties.security-severity`` (GitHub's numeric
severity scale), results with ``ruleId``/``ruleIndex``/``level``/``message``, at least one
location per result (GitHub drops results without one) and ``partialFingerprints`` so
that the same finding in the next run is recognised and not reported as new.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.core.verdict import fail_on_name, report_verdict, resolved_checks
from mlwarden.report.formatting import jsonable, threat_ids

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
DEFAULT_INFORMATION_URI = "https://github.com/mlwarden/mlwarden"

#: GitHub maps these to Critical (>= 9.0), High (7.0-8.9), Medium (4.0-6.9), Low (< 4.0).
SECURITY_SEVERITY: dict[Severity, str] = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "1.0",
}

#: SARIF result levels (``error``, ``warning``, ``note``).
LEVEL: dict[Severity, str] = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

#: GitHub code scanning reads at most 20 tags per rule.
MAX_TAGS = 20

#: Where a result is put when neither it nor the subject names a file.
PLACEHOLDER_FILE = "mlwarden.toml"

#: Subject keys, in order, that may name the assessed model file.
SUBJECT_FILE_KEYS = ("model", "model_path", "weights", "path", "config")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DRIVE = re.compile(r"^[A-Za-z]:/")
_HTTP_METHOD = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s", re.IGNORECASE)
_FILE_SUFFIX = re.compile(r"\.[A-Za-z0-9_]{1,16}$")
_DIGITS = re.compile(r"\d+(\.\d+)?")
#: ``container::member`` or ``container!member`` names a member inside an archive.
_MEMBER_SEPARATORS = ("::", "!")


def _information_uri() -> str:
    """The project URL from the installed package metadata, else the default."""
    try:
        from importlib.metadata import metadata

        for entry in metadata("mlwarden").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() in {"homepage", "repository", "source"} and url.strip():
                return url.strip()
    except Exception:  # noqa: BLE001 - metadata is a nicety, never a failure
        pass
    return DEFAULT_INFORMATION_URI


def split_member(location: str) -> tuple[str, str | None]:
    """``"model.zip::archive/data.pkl"`` -> ``("model.zip", "archive/data.pkl")``."""
    for sep in _MEMBER_SEPARATORS:
        if sep in location:
            head, member = location.split(sep, 1)
            if head:
                return head, member or None
    return location, None


def artifact_uri(text: str, base_dir: str | Path | None = None) -> str | None:
    """A SARIF ``artifactLocation.uri`` for ``text`` if it names a file, else ``None``.

    Paths become relative to ``base_dir`` (the repository root, default: the working
    directory) with forward slashes, as GitHub matches them against the repository.
    Absolute paths outside ``base_dir`` become ``file://`` URIs. Endpoints
    (``https://...``, ``POST /predict``) and ``module:factory`` names are not files.
    """
    text = text.strip()
    if not text or _HTTP_METHOD.match(text):
        return None
    if text.lower().startswith("file://"):
        text = unquote(urlparse(text).path)
        if _DRIVE.match(text.lstrip("/")):
            text = text.lstrip("/")
    text = text.replace("\\", "/")
    is_drive = bool(_DRIVE.match(text))
    if _SCHEME.match(text) and not is_drive:
        return None  # a URL or a module:factory reference
    if "/" not in text and any(c.isspace() for c in text):
        return None  # prose such as "layer conv1.weight", not a file name
    absolute = is_drive or text.startswith("/")
    last = text.rstrip("/").rsplit("/", 1)[-1]
    if not (_FILE_SUFFIX.search(last) or (not absolute and "/" in text)):
        return None
    if absolute:
        base = Path(base_dir) if base_dir is not None else Path(os.getcwd())
        try:
            rel = Path(text).resolve().relative_to(base.resolve())
        except (ValueError, OSError):
            path = text if text.startswith("/") else "/" + text
            return "file://" + quote(posixpath.normpath(path), safe="/:-._~")
        text = rel.as_posix()
    norm = posixpath.normpath(text)
    if norm.startswith("./"):
        norm = norm[2:]
    return quote(str(PurePosixPath(norm)), safe="/-._~")


def _physical(uri: str) -> dict[str, Any]:
    # GitHub shows an alert on a line; a model file has none, so the first line stands
    # for the whole artefact (as container scanners do).
    return {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}}


def _fallback_uri(report: Report, base_dir: str | Path | None) -> str:
    for key in SUBJECT_FILE_KEYS:
        value = report.subject.get(key)
        if isinstance(value, str):
            container, _ = split_member(value)
            uri = artifact_uri(container, base_dir)
            if uri:
                return uri
    return PLACEHOLDER_FILE


def locations(finding: Finding, report: Report, base_dir: str | Path | None = None) -> list[dict]:
    """One SARIF location: the file (and archive member) if the finding names one,
    otherwise a logical location (endpoint, layer, class) placed on the subject's file."""
    loc = (finding.location or "").strip()
    if loc:
        container, member = split_member(loc)
        uri = artifact_uri(container, base_dir)
        if uri is not None:
            location: dict[str, Any] = {"physicalLocation": _physical(uri)}
            if member:
                location["logicalLocations"] = [
                    {"name": member, "fullyQualifiedName": loc, "kind": "member"}
                ]
            return [location]
    location = {"physicalLocation": _physical(_fallback_uri(report, base_dir))}
    if loc:
        location["logicalLocations"] = [
            {"name": loc, "fullyQualifiedName": loc, "kind": "resource"}
        ]
    return [location]


def fingerprint(finding: Finding) -> str:
    """A hash that stays the same across runs for the same problem at the same place.

    Digits in the title are masked: "accuracy 0.41 under PGD" and "accuracy 0.43 under
    PGD" are the same alert tomorrow, while different dangerous imports in one pickle
    stay separate.
    """
    title = _DIGITS.sub("#", finding.title.strip().lower())
    key = "\x1f".join([finding.id, finding.check, (finding.location or "").strip(), title])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _rule_name(title: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", title)
    return "".join(w[:1].upper() + w[1:] for w in words)[:80] or "Finding"


def _help(finding: Finding, tags: list[str]) -> dict[str, str]:
    lines_text = [finding.title, ""]
    lines_md = [f"**{_md(finding.title)}**", ""]
    if finding.detail:
        lines_text += [finding.detail, ""]
        lines_md += [_md(finding.detail), ""]
    if finding.check:
        lines_text.append(f"Reported by the mlwarden check '{finding.check}'.")
        lines_md.append(f"Reported by the mlwarden check `{finding.check.replace('`', '')}`.")
    threats = [t for t in tags if t.startswith(("ATLAS:", "OWASP:"))]
    if threats:
        lines_text.append("Related threats: " + ", ".join(threats))
        lines_md.append("Related threats: " + ", ".join(f"`{t}`" for t in threats))
    return {"text": "\n".join(lines_text).strip(), "markdown": "\n".join(lines_md).strip()}


def _md(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rules(findings: list[Finding]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One rule per finding id: worst severity and the union of threat tags of its findings."""
    by_id: dict[str, list[Finding]] = {}
    for finding in findings:
        by_id.setdefault(finding.id, []).append(finding)
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for rule_id, group in by_id.items():
        first = group[0]
        worst = max((f.severity for f in group), key=lambda s: s.rank)
        tags = ["security", "machine-learning"]
        for finding in group:
            for tag in [f"mlwarden/{finding.check}" if finding.check else "", *threat_ids(finding)]:
                if tag and tag not in tags:
                    tags.append(tag)
        tags = tags[:MAX_TAGS]
        index[rule_id] = len(rules)
        rules.append(
            {
                "id": rule_id,
                "name": _rule_name(first.title),
                "shortDescription": {"text": first.title or rule_id},
                "fullDescription": {"text": first.detail or first.title or rule_id},
                "help": _help(first, tags),
                "defaultConfiguration": {"level": LEVEL[worst]},
                "properties": {
                    "security-severity": SECURITY_SEVERITY[worst],
                    "tags": tags,
                    "precision": "high",
                    "problem.severity": {"error": "error", "warning": "warning"}.get(
                        LEVEL[worst], "recommendation"
                    ),
                },
            }
        )
    return rules, index


def _utc(timestamp: str) -> str | None:
    try:
        moment = _dt.datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sarif_log(report: Report, base_dir: str | Path | None = None) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log (a dict ready for ``json.dumps``)."""
    rules, rule_index = _rules(report.findings)
    results = []
    for finding in report.findings:
        message = finding.title or finding.id
        if finding.detail:
            message = f"{message.rstrip('.')}: {finding.detail}"
        results.append(
            {
                "ruleId": finding.id,
                "ruleIndex": rule_index[finding.id],
                "level": LEVEL[finding.severity],
                "message": {"text": message},
                "locations": locations(finding, report, base_dir),
                "partialFingerprints": {"mlwardenFinding/v1": fingerprint(finding)},
                "properties": {
                    "severity": finding.severity.value,
                    "check": finding.check,
                    "atlas": list(finding.atlas),
                    "owasp": list(finding.owasp),
                    "evidence": jsonable(finding.evidence),
                },
            }
        )
    checks = resolved_checks(report)
    decided = report_verdict(report)
    notifications = []
    for check in checks:
        if check.status in ("error", "skipped"):
            notifications.append(
                {
                    "level": "error" if check.status == "error" else "note",
                    "message": {
                        "text": f"check '{check.name}' {check.status}"
                        + (f": {check.summary}" if check.summary else "")
                    },
                    "descriptor": {"id": check.name},
                }
            )
    invocation: dict[str, Any] = {
        "executionSuccessful": not any(c.status == "error" for c in checks),
        # the exit code mlwarden gives for this report, and the verdict line that decides it
        "exitCode": decided.exit_code,
        "exitCodeDescription": decided.line(),
    }
    end = _utc(report.created_at)
    if end:
        invocation["endTimeUtc"] = end
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "mlwarden",
                "version": report.tool_version or "0.0.0",
                "informationUri": _information_uri(),
                "rules": rules,
            }
        },
        "invocations": [invocation],
        "results": results,
        "properties": {
            "title": report.title,
            "subject": jsonable(report.subject),
            "metrics": jsonable(report.metrics),
            "checks": [jsonable(c.model_dump()) for c in checks],
            "verdict": {
                "outcome": decided.word.lower(),
                "passed": decided.passed,
                "failOn": report.fail_on if report.fail_on is not None else None,
                "effectiveFailOn": fail_on_name(decided.fail_on),
                "text": decided.line(),
            },
        },
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def to_sarif(report: Report) -> str:
    """The report as SARIF 2.1.0 JSON text, paths relative to the working directory."""
    return json.dumps(sarif_log(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
