"""Drive the real CLI entry point in-process and capture its exit code and output."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlwarden.cli.main import run


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """``cli("audit", "--model", ...)`` runs ``mlwarden`` and returns code, stdout, stderr."""

    def invoke(*args: str) -> CliResult:
        with pytest.raises(SystemExit) as exc:
            run(list(args))
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 0
        return CliResult(code, captured.out, captured.err)

    return invoke
