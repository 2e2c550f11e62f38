"""Entry point of the ``mlwarden`` command.

Every command group lives in its own module and is registered below, one line
each. Modules imported here must not import torch at module level: ``--help``,
``--version``, ``scan`` and ``risk`` have to start fast.
"""

from __future__ import annotations

import os
import sys

import typer

from mlwarden import __version__
from mlwarden.cli.ui import fail
from mlwarden.core.errors import MlwardenError

app = typer.Typer(
    name="mlwarden",
    help="Secure machine-learning models: scan, attack, defend, serve, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlwarden {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """mlwarden: secure machine-learning models from design to production."""


# --- command groups: one registration line each ------------------------------------
from mlwarden.cli.attack import attack_app  # noqa: E402
from mlwarden.cli.attack_extraction import extraction_command  # noqa: E402
from mlwarden.cli.audit import audit_command  # noqa: E402
from mlwarden.cli.audit_log import audit_log_app  # noqa: E402
from mlwarden.cli.backdoor import backdoor_app  # noqa: E402
from mlwarden.cli.demo import demo_command  # noqa: E402
from mlwarden.cli.evaluate import evaluate_app  # noqa: E402
from mlwarden.cli.gateway import gateway_app  # noqa: E402
from mlwarden.cli.keys import keys_app  # noqa: E402
from mlwarden.cli.privacy import privacy_app  # noqa: E402
from mlwarden.cli.report import report_app  # noqa: E402
from mlwarden.cli.risk import risk_app  # noqa: E402
from mlwarden.cli.scan import scan_command  # noqa: E402
from mlwarden.cli.serve import serve_command  # noqa: E402
from mlwarden.cli.transfer import transfer_command  # noqa: E402

app.add_typer(risk_app, name="risk")
app.command("scan")(scan_command)
attack_app.command("extraction")(extraction_command)
app.add_typer(attack_app, name="attack")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(backdoor_app, name="backdoor")
app.command("transfer")(transfer_command)
app.add_typer(privacy_app, name="privacy")
app.command("serve")(serve_command)
app.add_typer(keys_app, name="keys")
app.add_typer(gateway_app, name="gateway")
app.add_typer(audit_log_app, name="audit-log")
app.command("audit")(audit_command)
app.add_typer(report_app, name="report")
app.command("demo")(demo_command)
# --- end of command groups ----------------------------------------------------------


def run(argv: list[str] | None = None) -> None:
    """Run the CLI; turn mlwarden errors into one line and an exit code, never a traceback.

    Typer's standalone mode already prints usage errors and exits 2; what escapes
    it is ours to format.
    """
    try:
        app(args=argv, prog_name="mlwarden")
    except MlwardenError as exc:
        fail(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still no traceback unless asked for
        if os.environ.get("MLWARDEN_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set MLWARDEN_DEBUG=1 for details)")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
