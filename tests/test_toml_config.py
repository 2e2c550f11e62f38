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


def test_spec_table_and_spec_file_may_be_partial(tmp_path):
    from mlwarden.config import read_spec_file, resolve_spec
    from mlwarden.core.spec import SpecOverride

    cfg = load_config(write(tmp_path, '[model]\npath = "m.pt2"\n[spec]\nbounds = [0, 255]\n'))
    assert cfg.spec == SpecOverride(bounds=(0.0, 255.0))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"class_names": ["cat", "dog"], "mean": [0.5], "std": [0.25]}')
    from_file = read_spec_file(spec_file)
    assert from_file.given() == {"class_names": ("cat", "dog"), "mean": (0.5,), "std": (0.25,)}
    # --spec wins over the table of the configuration; without it the table applies
    assert resolve_spec(spec_file, tmp_path / "mlwarden.toml") == from_file
    assert resolve_spec(None, tmp_path / "mlwarden.toml") == cfg.spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[spec]\nbounds = [1, 0]\n", "spec.bounds: Value error, bounds must be finite"),
        ("[spec]\ncolour = 1\n", "spec.colour: unknown key"),
        ('[spec]\nmean = [0.5]\n', "mean and std must be given together"),
    ],
)
def test_bad_spec_tables_name_the_key(tmp_path, text, message):
    from mlwarden.config import spec_from_config

    path = write(tmp_path, text)
    for read in (load_config, spec_from_config):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
            read(path)
