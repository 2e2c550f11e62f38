"""``mlwarden audit-log verify PATH``: check the gateway's hash-chained audit trail.

Exit 0 when every entry links to the one before and matches its hash, 1 when the file
was tampered with (the first broken line is named), 2 when it cannot be read.
"""

from __future__ import annotations

from pathlib import Path

import typer

audit_log_app = typer.Typer(help="Inspect the gateway's audit log.", no_args_is_help=True)


@audit_log_app.command("verify")
def verify(path: Path = typer.Argument(..., help="Audit log file (JSON lines).")) -> None:
    """Recompute the hash chain; report the first entry that was edited, removed or added."""
    from mlwarden.cli.ui import console, fail
    from mlwarden.gateway.audit_log import verify_chain

    result = verify_chain(path)
    if result.ok:
        console.print(f"[green]ok[/]: {result.entries} entries, hash chain intact", highlight=False)
        return
    fail(
        f"{path}: tampered at line {result.line}: {result.reason} "
        f"({result.entries} entries before it verify)"
    )
    raise typer.Exit(1)
