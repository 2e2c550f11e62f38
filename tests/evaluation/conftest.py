"""Fixtures for the evaluation tests: the digits CNN as a .pt2 file, a CLI driver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mlwarden.core import Classifier


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``mlwarden`` in-process through its real entry point (errors -> exit codes)."""
    from mlwarden.cli.main import run

    def invoke(*args: str) -> CliResult:
        with pytest.raises(SystemExit) as exc:
            run(list(args))
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 0
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture(scope="session")
def digits_cnn_pt2(digits_cnn: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlwarden.io.export import save_pt2

    path = tmp_path_factory.mktemp("evaluation") / "digits_cnn.pt2"
    save_pt2(digits_cnn, path)
    return path
