"""``mlwarden scan PATH...``: check model files before anything loads them.

Exit codes: 0 every file is below ``--fail-on``; 1 a file (or a lock check) is at or
above it; 2 usage or input error. Imports nothing heavy: no torch, ever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mlwarden.supplychain import ScanResult

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
    from mlwarden.cli.common import parse_fail_on
    from mlwarden.core.errors import ConfigError
    from mlwarden.core.verdict import FAIL_ON_CHOICES
    from mlwarden.supplychain import Verdict

    value = fail_on.strip().lower()
    if value in VERDICT_CHOICES:
        threshold = Verdict(value).rank
        return result.verdict.rank >= threshold
    if value not in FAIL_ON_CHOICES:
        choices = ", ".join(VERDICT_CHOICES + FAIL_ON_CHOICES)
        raise ConfigError(f"--fail-on must be one of {choices}, got '{fail_on}'")
    severity = parse_fail_on(value)
    return severity is not None and any(f.severity >= severity for f in result.all_findings())


def _print_text(result: ScanResult, console: object) -> None:
    from rich.table import Table

    table = Table(title="mlwarden scan", show_lines=False)
    for col in ("file", "format", "verdict", "findings"):
        table.add_column(col, overflow="fold")
    for f in result.files:
        style = _STYLE[f.verdict.value]
        table.add_row(f.path, f.format, f"[{style}]{f.verdict.value}[/]", str(len(f.findings)))
    console.print(table)  # type: ignore[attr-defined]
    for finding in result.all_findings():
        v = finding.evidence.get("verdict", "")
        console.print(  # type: ignore[attr-defined]
            f"[{_STYLE.get(v, 'white')}]{finding.severity.value:>8}[/] {finding.id} "
            f"{finding.location}: {finding.detail}",
            highlight=False,
            soft_wrap=True,
        )
    counts = result.counts()
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    console.print(  # type: ignore[attr-defined]
        f"{len(result.files)} files: {summary or 'none'}; verdict "
        f"[{_STYLE[result.verdict.value]}]{result.verdict.value}[/]",
        highlight=False,
    )


def scan_command(
    paths: list[Path] = typer.Argument(
        None, help="Files or folders to scan (folders recursively)."
    ),
    allow: list[str] = typer.Option(
        [],
        "--allow",
        help="Accept a reviewed pickle import 'module.name' (repeatable; 'module.*').",
    ),
    pin: Path = typer.Option(
        None, "--pin", help="Write SHA-256, size and verdict of every file to this lock file."
    ),
    verify: Path = typer.Option(
        None, "--verify", help="Fail when a file differs from this lock file."
    ),
    fmt: str = typer.Option(
        "text", "--format", "-f", help="Output: text, json, sarif (also md, html, junit)."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write the output to this file."),
    fail_on: str = typer.Option(
        "suspicious",
        "--fail-on",
        help="Exit 1 at or above this verdict (suspicious, unreadable, unsafe) or severity "
        "(info..critical); 'never' disables.",
    ),
    config: Path = typer.Option(
        None, "--config", help="mlwarden.toml whose \\[checks.scan] allow is added."
    ),
    deep: bool = typer.Option(
        False, "--deep", help="Also verify the CRC of raw tensor data (reads every byte)."
    ),
) -> None:
    """Scan model files for code execution and malformed containers, without loading them."""
    from mlwarden.core.errors import ConfigError
    from mlwarden.supplychain import scan_path
    from mlwarden.supplychain.lockfile import lock_roots, verify_lock, write_lock

    if pin is not None and verify is not None:
        raise ConfigError("use either --pin or --verify, not both")
    if not paths:
        if verify is None:
            raise ConfigError(
                "give at least one PATH to scan (or --verify LOCK to re-check its files)"
            )
        paths = [Path(p) for p in lock_roots(verify)]
    fmt = fmt.strip().lower()
    failing_probe = fail_on  # validate before the (possibly long) scan
    if failing_probe.strip().lower() not in VERDICT_CHOICES:
        from mlwarden.cli.common import parse_fail_on

        parse_fail_on(failing_probe)
    allow_all = [*allow, *_config_allow(config)]

    from mlwarden.cli.ui import progress_bars

    with progress_bars() as progress:
        from mlwarden.supplychain import ScanLimits

        # the SHA-256 is one full read of every file: only pins, lock checks and the
        # machine-readable outputs (which record it) pay for it
        result = scan_path(
            paths,
            allow=allow_all,
            progress=progress,
            limits=ScanLimits(verify_data_crc=deep),
            digest=pin is not None or verify is not None or fmt != "text",
        )
    if verify is not None:
        verify_lock(result, verify)
    if pin is not None:
        write_lock(result, pin)

    code = 1 if failing(result, fail_on) else 0
    if fmt == "json":
        text = json.dumps(result.to_dict(), indent=2)
        _write(text, output)
    elif fmt == "text":
        if output is None:
            from mlwarden.cli.ui import console

            _print_text(result, console)
        else:
            from rich.console import Console

            with output.open("w", encoding="utf-8") as fh:
                _print_text(
                    result, Console(file=fh, width=160, no_color=True, force_terminal=False)
                )
    else:
        from mlwarden.report import render

        _write(render(result.to_report(), fmt), output)
    raise typer.Exit(code)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
