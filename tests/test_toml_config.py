"""mlwarden.toml: validated, unknown keys named, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.audit.builtin_checks import AccuracyCheck
from mlwarden.config import load_config
from mlwarden.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlwarden.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_and_relative_paths(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            '[model]\npath = "m.pt2"\n[data]\nsource = "digits"\nlimit = 100\n'
            "[checks.accuracy]\nmin_accuracy = 0.8\n",
        )
    )
    assert cfg.resolve(cfg.model.path) == str((tmp_path / "m.pt2").resolve())
    assert cfg.resolve(cfg.data.source) == "digits"
    assert isinstance(cfg.checks["accuracy"], AccuracyCheck)
    assert cfg.checks["accuracy"].min_accuracy == 0.8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[model]\npath = "m.pt2"\ncolour = "red"\n', "model.colour: unknown key"),
        ("[model]\n", "model.path: missing required key"),
        ("[checks.accuracy]\nmin_acc = 0.8\n", "checks.accuracy: min_acc: unknown key"),
        ("[checks.nonsense]\n", "unknown check 'checks.nonsense'"),
        ('[audit]\nfail_on = "sometimes"\n', "audit.fail_on"),
        ('[audit]\nformats = ["pdf"]\n', "unknown format"),
        ("[checks.accuracy]\nmin_accuracy = 2.0\n", "checks.accuracy: min_accuracy"),
        ("[model\n", "invalid TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
