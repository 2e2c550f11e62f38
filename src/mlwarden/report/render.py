"""Choose a renderer by format name or file suffix, and write reports atomically.

Renderers are registered by name with the module that implements them, so that
``render(report, "json")`` never pays for importing matplotlib and a new format is one
line here (a registry, as Opacus registers per-layer logic, not an ``if`` chain).
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Report

#: format name -> (module, function) of a ``(Report) -> str`` renderer.
RENDERERS: dict[str, tuple[str, str]] = {
    "json": ("mlwarden.report.json_report", "to_json"),
    "sarif": ("mlwarden.report.sarif", "to_sarif"),
    "junit": ("mlwarden.report.junit", "to_junit"),
    "md": ("mlwarden.report.markdown", "to_markdown"),
    "html": ("mlwarden.report.html", "to_html"),
    "text": ("mlwarden.report.terminal", "to_text"),
}

#: Other spellings users type for the same formats.
ALIASES: dict[str, str] = {"markdown": "md", "xml": "junit", "htm": "html", "txt": "text"}

#: File suffix -> format; longer suffixes are tried first (``.sarif.json`` is SARIF).
SUFFIXES: dict[str, str] = {
    ".sarif.json": "sarif",
    ".sarif": "sarif",
    ".json": "json",
    ".xml": "junit",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
}

FORMATS: tuple[str, ...] = tuple(RENDERERS)


def normalize_format(fmt: str) -> str:
    """The canonical name of ``fmt`` (case and aliases ignored), or a `ParameterError`."""
    name = str(getattr(fmt, "value", fmt)).strip().lower()
    name = ALIASES.get(name, name)
    if name not in RENDERERS:
        raise ParameterError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    return name


def format_for_path(path: str | Path) -> str | None:
    """The format a file name implies (``report.sarif`` -> ``sarif``), or ``None``."""
    name = Path(path).name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def renderer(fmt: str) -> Callable[[Report], str]:
    module, func = RENDERERS[normalize_format(fmt)]
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def render(report: Report, fmt: str) -> str:
    """Render ``report`` as ``json``, ``sarif``, ``junit``, ``md``, ``html`` (or ``text``)."""
    if not isinstance(report, Report):
        raise ParameterError(f"render() needs a mlwarden Report, got {type(report).__name__}")
    return renderer(fmt)(report)


def write_report(report: Report, path: str | Path, fmt: str | None = None) -> Path:
    """Render ``report`` into ``path``; the format comes from ``fmt`` or the file suffix.

    The file is written to a temporary name and renamed into place, so a CI job that
    reads it never sees half a report.
    """
    path = Path(path)
    if fmt is None:
        fmt = format_for_path(path)
        if fmt is None:
            raise ParameterError(
                f"cannot tell the report format from the file name '{path.name}'; use a "
                f"suffix ({', '.join(sorted(set(SUFFIXES)))}) or pass fmt="
            )
    return write_atomic(path, render(report, fmt))


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (creating folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (not mkstemp) so that the file gets the user's usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # errors="replace": a lone surrogate (JSON may hold one, UTF-8 cannot) must not
        # make a hostile report unwritable
        with open(tmp, "x", encoding="utf-8", errors="replace", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
