"""``mlwarden audit-log verify|keygen``: check the gateway's authenticated audit trail.

``verify`` exits 0 when every entry is authenticated by a key of the keyring, links to
the one before and matches every checkpoint of the head file; 1 when the file was
tampered with (the first broken line is named); 2 when it cannot be checked (no key, no
file). The key comes from a key file or an environment variable, never from the command
line (where it would land in shell history and the process table).
"""

from __future__ import annotations

from pathlib import Path

import typer

audit_log_app = typer.Typer(help="Inspect the gateway's audit log.", no_args_is_help=True)

KEY_ENV_DEFAULT = "MLWARDEN_AUDIT_KEY"


@audit_log_app.command("verify")
def verify(
    path: Path | None = typer.Argument(
        None, help="Audit log file (JSON lines); default: [gateway.audit_log] path of --config."
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Audit keyring (JSON, from `mlwarden audit-log keygen`)."
    ),
    key_env: str | None = typer.Option(
        None, "--key-env",
        help=f"Environment variable holding KEY_ID:HEX_SECRET (default {KEY_ENV_DEFAULT}).",
    ),
    head: Path | None = typer.Option(
        None, "--head", help="Head file with the chain's checkpoints (detects truncation)."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="mlwarden.toml whose [gateway.audit_log] names the log, "
        "key file, key variable and head file."
    ),
    unkeyed: bool = typer.Option(
        False, "--unkeyed", help="Check a log written without a key (proves consistency only)."
    ),
) -> None:
    """Recompute the authenticated chain; report the first entry edited, removed or added."""
    from mlwarden.cli.ui import console, fail
    from mlwarden.core.errors import InputError
    from mlwarden.gateway.audit_log import AuditKeyring, verify_chain

    if config is not None:
        from mlwarden.gateway.config import load_serve_config

        audit = load_serve_config(config)[1].audit_log
        path = path or audit.path
        key_file = key_file or audit.key_file
        key_env = key_env or audit.key_env
        head = head or audit.head_file
    if path is None:
        raise InputError("give the audit log's path, or --config mlwarden.toml")
    env = key_env or KEY_ENV_DEFAULT
    keyring = None if unkeyed else AuditKeyring.load(key_file, env)
    if keyring is None and not unkeyed:
        raise InputError(f"verifying needs the audit key: --key-file FILE or the environment "
                         f"variable {env} (--unkeyed checks a log written without a key)")
    result = verify_chain(path, keyring, heads=head)
    if result.ok:
        if keyring is None:
            console.print(f"[yellow]consistent, NOT authenticated[/]: {result.entries} entries; "
                          "written without a key, so anyone who could write the file could "
                          "have rewritten it", highlight=False, soft_wrap=True)
            return
        heads = (f"; {result.heads} checkpoints, the newest at entry {result.last_head}"
                 if head is not None else "; no head file: entries cut from the end would "
                 "go unnoticed")
        console.print(f"[green]ok[/]: {result.entries} entries, authenticated chain intact "
                      f"(keys {', '.join(result.kids) or '-'}){heads}", highlight=False,
                      soft_wrap=True)
        return
    fail(
        f"{path}: tampered at line {result.line}: {result.reason} "
        f"({result.entries} entries before it verify)"
    )
    raise typer.Exit(1)


@audit_log_app.command("keygen")
def keygen(
    file: Path = typer.Option(..., "--file", "-f", help="Audit keyring to create or extend."),
    kid: str | None = typer.Option(
        None, "--kid", help="Id of the new key (default: the UTC time)."
    ),
) -> None:
    """Add a fresh key and make it the one the gateway signs with (rotation: older keys stay
    so that older entries still verify). The file is written with mode 0600."""
    from mlwarden.gateway.audit_log import keygen as add_key

    new = add_key(file, kid)
    typer.echo(f"{file}: key '{new}' is now active; point [gateway.audit_log] key_file at it "
               "and restart the gateway")
