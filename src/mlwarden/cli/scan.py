"""``mlwarden scan PATH...``: check model files before anything loads them.

Exit codes: 0 every file is below ``--fail-on``; 1 a file (or a lock check) is at or
above it; 2 usage or input error. Imports nothing heavy: no torch, ever.

The command parses its own arguments with argparse instead of Typer: a team runs
``mlwarden scan`` in front of every load, often on one small file, and importing
Typer, Click and Rich costs more than the scan itself. Rich is used only when a
person is watching (standard output or error is a terminal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from mlwarden.supplychain import ScanResult

#: one line for ``mlwarden --help`` and ``mlwarden scan --help``
SUMMARY = "Scan model files for code execution and malformed containers, without loading them."
VERDICT_CHOICES = ("suspicious", "unreadable", "unsafe")
_STYLE = {"safe": "green", "suspicious": "yellow", "unreadable": "magenta", "unsafe": "bold red"}


def _config_allow(config: Path | None) -> list[str]:
    """``allow`` from ``[checks.scan]`` of an ``mlwarden.toml``."""
    if config is None:
        return []
    import tomllib

    from mlwarden.core.errors import ConfigError

    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file '{config}' does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file '{config}' is not valid TOML: {exc}") from None
    allow = data.get("checks", {}).get("scan", {}).get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ConfigError(
            f"[checks.scan] allow in '{config}' must be a list of 'module.name' strings"
        )
    return allow


def failing(result: ScanResult, fail_on: str) -> bool:
    """Whether ``result`` fails at ``fail_on`` (a verdict, a severity, or ``never``)."""
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.finding import FAIL_ON_CHOICES, fail_threshold
    from mlwarden.supplychain.results import Verdict

    value = fail_on.strip().lower()
    if value in VERDICT_CHOICES:
        threshold = Verdict(value).rank
        return result.verdict.rank >= threshold
    if value not in FAIL_ON_CHOICES:
        choices = ", ".join(VERDICT_CHOICES + FAIL_ON_CHOICES)
        raise ConfigError(f"--fail-on must be one of {choices}, got '{fail_on}'")
    severity = fail_threshold(value)
    return severity is not None and any(f.severity >= severity for f in result.all_findings())


def _lines(result: ScanResult) -> list[tuple[str, str]]:
    """The text report as (style, line) pairs: one table, the findings, a summary."""
    rows = [("file", "format", "verdict", "findings")]
    rows += [(f.path, f.format, f.verdict.value, str(len(f.findings))) for f in result.files]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]

    out = [("bold", line(rows[0]))]
    for f, row in zip(result.files, rows[1:], strict=True):
        out.append((_STYLE[f.verdict.value], line(row)))
    for finding in result.all_findings():
        style = _STYLE.get(finding.evidence.get("verdict", ""), "white")
        text = f"{finding.severity.value:>8} {finding.id} {finding.location}: {finding.detail}"
        out.append((style, text))
    counts = ", ".join(f"{n} {k}" for k, n in result.counts().items() if n)
    out.append(
        (
            _STYLE[result.verdict.value],
            f"{len(result.files)} files: {counts or 'none'}; verdict {result.verdict.value}",
        )
    )
    return out


def _print_text(result: ScanResult, stream: TextIO) -> None:
    """Plain lines, or the same lines coloured by Rich when ``stream`` is a terminal."""
    lines = _lines(result)
    if not stream.isatty():
        stream.write("".join(line + "\n" for _, line in lines))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=stream, highlight=False, soft_wrap=True)
    for style, line in lines:
        console.print(f"[{style}]{escape(line)}[/]")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``mlwarden scan``."""
    parser = argparse.ArgumentParser(
        prog="mlwarden scan",
        description=SUMMARY,
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, help="Files or folders to scan (folders recursively)."
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        help="Accept a reviewed pickle import 'module.name' (repeatable; 'module.*').",
    )
    parser.add_argument(
        "--pin", type=Path, help="Write SHA-256, size and verdict of every file to this lock file."
    )
    parser.add_argument("--verify", type=Path, help="Fail when a file differs from this lock file.")
    parser.add_argument(
        "--format",
        "-f",
        dest="fmt",
        default="text",
        help="Output: text, json, sarif (also md, html, junit).",
    )
    parser.add_argument("--output", "-o", type=Path, help="Write the output to this file.")
    parser.add_argument(
        "--fail-on",
        default="suspicious",
        help="Exit 1 at or above this verdict (suspicious, unreadable, unsafe) or severity "
        "(info..critical); 'never' disables.",
    )
    parser.add_argument(
        "--config", type=Path, help="mlwarden.toml whose [checks.scan] allow is added."
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="Also verify the CRC of raw tensor data (reads every byte).",
    )
    return parser


def main(argv: list[str]) -> int:
    """Run ``mlwarden scan`` with ``argv``; return the exit code.

    Usage errors exit 2 through argparse; mlwarden errors propagate to `run`, which
    prints them as one line.
    """
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.finding import fail_threshold
    from mlwarden.supplychain.context import ScanLimits
    from mlwarden.supplychain.lockfile import lock_roots, verify_lock, write_lock
    from mlwarden.supplychain.scanner import scan_path

    args = build_parser().parse_args(argv)
    if args.pin is not None and args.verify is not None:
        raise ConfigError("use either --pin or --verify, not both")
    paths: list[Path] = args.paths
    if not paths:
        if args.verify is None:
            raise ConfigError(
                "give at least one PATH to scan (or --verify LOCK to re-check its files)"
            )
        paths = [Path(p) for p in lock_roots(args.verify)]
    fmt = args.fmt.strip().lower()
    if args.fail_on.strip().lower() not in VERDICT_CHOICES:
        fail_threshold(args.fail_on)  # a typo fails before the (possibly long) scan
    allow_all = [*args.allow, *_config_allow(args.config)]

    # the SHA-256 is one full read of every file: only pins, lock checks and the
    # machine-readable outputs (which record it) pay for it
    scan = dict(
        allow=allow_all,
        limits=ScanLimits(verify_data_crc=args.deep),
        digest=args.pin is not None or args.verify is not None or fmt != "text",
    )
    if sys.stderr.isatty():
        from mlwarden.cli.ui import progress_bars

        with progress_bars() as progress:
            result = scan_path(paths, progress=progress, **scan)  # type: ignore[arg-type]
    else:
        result = scan_path(paths, **scan)  # type: ignore[arg-type]
    if args.verify is not None:
        verify_lock(result, args.verify)
    if args.pin is not None:
        write_lock(result, args.pin)

    code = 1 if failing(result, args.fail_on) else 0
    if fmt == "json":
        _write(json.dumps(result.to_dict(), indent=2, default=str), args.output)
    elif fmt == "text":
        if args.output is None:
            _print_text(result, sys.stdout)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            with args.output.open("w", encoding="utf-8") as fh:
                _print_text(result, fh)
    else:
        from mlwarden.report import render

        _write(render(result.to_report(), fmt), args.output)
    return code


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
