"""Pinning: record SHA-256, size and verdict of every scanned file, and verify later.

The lock file is JSON (``mlwarden.lock``). Paths are stored relative to the lock
file's folder, so a repository can commit the lock next to its models and verify it
on any machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputError
from mlwarden.supplychain.results import ScanResult, make_finding, verdict_of

LOCK_VERSION = 1


def _rel(path: str | Path, base: Path) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return os.path.relpath(p, base).replace(os.sep, "/")


def write_lock(result: ScanResult, lock_path: str | Path) -> Path:
    """Write the pins of ``result`` to ``lock_path``."""
    lock = Path(lock_path)
    base = lock.resolve().parent
    entries = {}
    for f in result.files:
        if f.sha256 is None:
            raise InputError("cannot pin a scan made without digests (digest=False)")
        entries[_rel(f.path, base)] = {
            "sha256": f.sha256,
            "size": f.size,
            "verdict": f.verdict.value,
        }
    data = {
        "version": LOCK_VERSION,
        "tool": "mlwarden",
        "roots": [_rel(r, base) for r in result.roots],
        "files": dict(sorted(entries.items())),
    }
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return lock


def read_lock(lock_path: str | Path) -> dict[str, Any]:
    lock = Path(lock_path)
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"lock file '{lock}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"lock file '{lock}' is not readable JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != LOCK_VERSION
        or not isinstance(data.get("files"), dict)
    ):
        raise InputError(f"lock file '{lock}' is not an mlwarden lock (version {LOCK_VERSION})")
    return data


def lock_roots(lock_path: str | Path) -> list[str]:
    """The paths a lock file pinned, as paths usable from the current directory."""
    data = read_lock(lock_path)
    base = Path(lock_path).resolve().parent
    return [os.path.relpath(base / r) for r in data.get("roots", [])]


def verify_lock(result: ScanResult, lock_path: str | Path) -> ScanResult:
    """Add findings to ``result`` for every file that changed, appeared or went missing."""
    data = read_lock(lock_path)
    base = Path(lock_path).resolve().parent
    pinned: dict[str, dict[str, Any]] = data["files"]
    seen: set[str] = set()
    for f in result.files:
        key = _rel(f.path, base)
        seen.add(key)
        pin = pinned.get(key)
        if pin is None:
            f.findings.append(
                make_finding(
                    "MLW-SCAN-071",
                    f.path,
                    "file is not pinned in the lock file",
                    lock=str(lock_path),
                    sha256=f.sha256,
                )
            )
        elif pin.get("sha256") != f.sha256 or pin.get("size") != f.size:
            f.findings.append(
                make_finding(
                    "MLW-SCAN-070",
                    f.path,
                    f"SHA-256 {f.sha256} differs from the pinned {pin.get('sha256')}",
                    lock=str(lock_path),
                    pinned_sha256=pin.get("sha256"),
                    sha256=f.sha256,
                    pinned_size=pin.get("size"),
                    size=f.size,
                )
            )
        else:
            continue
        f.verdict = verdict_of(f.findings)
    for key in sorted(set(pinned) - seen):
        result.findings.append(
            make_finding(
                "MLW-SCAN-072",
                os.path.relpath(base / key),
                "pinned file is missing",
                lock=str(lock_path),
                pinned_sha256=pinned[key].get("sha256"),
            )
        )
    return result
