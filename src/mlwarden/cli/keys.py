"""``mlwarden keys create|revoke|list``: manage the gateway's API key file.

The key itself is printed once at creation; only its SHA-256 is stored. No torch import.
"""

from __future__ import annotations

from pathlib import Path

import typer

keys_app = typer.Typer(
    help="Manage gateway API keys (stored only as hashes).", no_args_is_help=True
)

KeyFileOption = typer.Option(
    Path("mlwarden-keys.json"),
    "--file",
    "-k",
    help="Key file (key_file in the gateway.auth table).",
)


@keys_app.command("create")
def create(
    name: str = typer.Option("", "--name", "-n", help="A label for the key (team, service)."),
    scope: list[str] = typer.Option(
        ["predict"], "--scope", "-s", help="Scope to grant: predict, metrics, admin (repeatable)."
    ),
    output: str = typer.Option(
        None,
        "--output",
        help="Output detail: labels, top_k, rounded, probabilities, "
        "perturbed (default: the gateway's default_output).",
    ),
    key_file: Path = KeyFileOption,
) -> None:
    """Create a key; prints it once (store it now, it cannot be shown again)."""
    from mlwarden.gateway.auth import add_key

    new = add_key(key_file, name, tuple(scope), output)  # type: ignore[arg-type]
    typer.echo(new.api_key)
    typer.echo(
        f"created key {new.entry.prefix} ({', '.join(new.entry.scopes)}) in {key_file}", err=True
    )


@keys_app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="Prefix (or unique name) of the key to revoke."),
    key_file: Path = KeyFileOption,
) -> None:
    """Revoke a key; running gateways reading this file refuse it at once."""
    from mlwarden.gateway.auth import revoke_key

    entry = revoke_key(key_file, key)
    typer.echo(f"revoked key {entry.prefix}{f' ({entry.name})' if entry.name else ''}")


@keys_app.command("list")
def list_keys(key_file: Path = KeyFileOption) -> None:
    """List keys (prefix, name, scopes, output, state); never the secrets."""
    from rich.table import Table

    from mlwarden.cli.ui import console
    from mlwarden.gateway.auth import read_key_file

    table = Table("prefix", "name", "scopes", "output", "state", "created")
    for e in read_key_file(key_file):
        table.add_row(
            e.prefix,
            e.name,
            ",".join(e.scopes),
            e.output or "default",
            "revoked" if e.revoked else "active",
            e.created,
        )
    console.print(table)
