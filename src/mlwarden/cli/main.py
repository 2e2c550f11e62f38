"""Entry point of the ``mlwarden`` command.

Every command group lives in its own module and is registered below, one line
each. Modules imported here must not import torch at module level: ``--help``,
``--version``, ``scan`` and ``risk`` have to start fast. Nothing here imports Typer
until a Typer command is asked for: ``scan`` parses its own arguments (attribute
``main``) and `run` calls it directly.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import MlwardenError

if TYPE_CHECKING:
    import typer


# --- command groups: one line each (name, module, attribute, a group or a command) --------
COMMANDS: tuple[tuple[str, str, str, bool], ...] = (
    ("risk", "mlwarden.cli.risk", "risk_app", True),
    ("scan", "mlwarden.cli.scan", "main", False),
    ("attack", "mlwarden.cli.attack", "attack_app", True),
    ("evaluate", "mlwarden.cli.evaluate", "evaluate_app", True),
    ("backdoor", "mlwarden.cli.backdoor", "backdoor_app", True),
    ("transfer", "mlwarden.cli.transfer", "transfer_command", False),
    ("harden", "mlwarden.cli.harden", "harden_command", False),
    ("privacy", "mlwarden.cli.privacy", "privacy_app", True),
    ("federated", "mlwarden.cli.federated", "federated_app", True),
    ("serve", "mlwarden.cli.serve", "serve_command", False),
    ("keys", "mlwarden.cli.keys", "keys_app", True),
    ("gateway", "mlwarden.cli.gateway", "gateway_app", True),
    ("audit-log", "mlwarden.cli.audit_log", "audit_log_app", True),
    ("audit", "mlwarden.cli.audit", "audit_command", False),
    ("report", "mlwarden.cli.report", "report_app", True),
    ("demo", "mlwarden.cli.demo", "demo_command", False),
    ("keygen", "mlwarden.cli.provenance", "keygen_command", False),
    ("sign", "mlwarden.cli.provenance", "sign_command", False),
    ("verify", "mlwarden.cli.provenance", "verify_command", False),
    ("bom", "mlwarden.cli.provenance", "bom_command", False),
    ("encrypt", "mlwarden.cli.provenance", "encrypt_command", False),
    ("decrypt", "mlwarden.cli.provenance", "decrypt_command", False),
)
# --- end of command groups ------------------------------------------------------------

#: commands that parse their own arguments: `run` calls them without building Typer
_SELF_PARSING = {name: module for name, module, attribute, _ in COMMANDS if attribute == "main"}


def _register(target: typer.Typer, names: set[str] | None = None) -> typer.Typer:
    """Add the command groups of ``names`` (all when None) to ``target``.

    Importing every command module costs start-up time that ``mlwarden scan`` on one
    small file should not pay, so `run` registers only the command it was asked for.
    """
    import importlib

    for name, module, attribute, group in COMMANDS:
        if names is not None and name not in names:
            continue
        obj = getattr(importlib.import_module(module), attribute)
        if group:
            target.add_typer(obj, name=name)
        elif attribute == "main":
            _forward(target, name, obj)
        else:
            target.command(name)(obj)
    return target


def _forward(target: typer.Typer, name: str, main: Any) -> None:
    """Register a self-parsing command (``main(argv) -> int``) under Typer.

    Its arguments pass through untouched, so ``mlwarden --help`` lists it and the
    whole app (`app`, which tests drive with Typer's runner) still runs it.
    """
    import typer

    def command(ctx: typer.Context) -> None:
        raise typer.Exit(main(list(ctx.args)))

    command.__doc__ = getattr(sys.modules[main.__module__], "SUMMARY", "")
    command.__annotations__ = {"ctx": typer.Context, "return": None}
    target.command(
        name,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(command)


def _version(value: bool) -> None:
    import typer

    if value:
        from mlwarden import __version__

        typer.echo(f"mlwarden {__version__}")
        raise typer.Exit(0)


def _root_callback() -> Any:
    import typer

    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """mlwarden: secure machine-learning models from design to production."""

    return _root


def build_app(names: set[str] | None = None) -> typer.Typer:
    """The ``mlwarden`` command with the command groups of ``names`` (all when None)."""
    import typer

    root = typer.Typer(
        name="mlwarden",
        help="Secure machine-learning models: scan, attack, defend, serve, audit.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )
    root.callback()(_root_callback())
    return _register(root, names)


def __getattr__(name: str) -> typer.Typer:
    """``app``: the whole command, built on first use (tests and docs tools import it)."""
    if name == "app":
        global app
        app = build_app()
        return app
    raise AttributeError(name)


def run(argv: list[str] | None = None) -> None:
    """Run the CLI; turn mlwarden errors into one line and an exit code, never a traceback.

    Typer's standalone mode already prints usage errors and exits 2; what escapes
    it is ours to format.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    first = next((arg for arg in args if not arg.startswith("-")), None)
    known = {name for name, *_ in COMMANDS}
    try:
        if args and args[0] in _SELF_PARSING:
            import importlib

            main = importlib.import_module(_SELF_PARSING[args[0]]).main
            sys.exit(main(args[1:]))
        build_app({first} if first in known else None)(args=args, prog_name="mlwarden")
    except MlwardenError as exc:
        from mlwarden.cli.ui import fail

        fail(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from mlwarden.cli.ui import fail

        fail("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still no traceback unless asked for
        if os.environ.get("MLWARDEN_DEBUG"):
            raise
        from mlwarden.cli.ui import fail

        fail(f"internal error: {type(exc).__name__}: {exc} (set MLWARDEN_DEBUG=1 for details)")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
