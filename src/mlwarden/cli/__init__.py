"""The ``mlwarden`` command line: one Typer module per command group."""
