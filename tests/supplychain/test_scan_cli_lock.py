"""``mlwarden scan``: outputs, exit codes, pinning and verification, the audit check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlwarden.cli.main import run
from mlwarden.supplychain import scan_path
from mlwarden.supplychain.lockfile import verify_lock, write_lock


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture()
def model_dir(corpus, tmp_path: Path) -> Path:
    root, _ = corpus
    d = tmp_path / "teacher"
    d.mkdir()
    for name in ("state_dict.pt", "model.safetensors", "config.json"):
        shutil.copy(root / "benign" / name, d / name)
    return d


def test_exit_codes(corpus, model_dir: Path, capsys) -> None:
    root, _ = corpus
    assert _cli(["scan", str(model_dir)], capsys)[0] == 0
    assert _cli(["scan", str(root / "evil/unknown_global.pt")], capsys)[0] == 1  # suspicious fails
    assert (
        _cli(["scan", str(root / "evil/unknown_global.pt"), "--fail-on", "unsafe"], capsys)[0] == 0
    )
    reviewed = ["--allow", "scan_corpus._Unlisted"]
    assert _cli(["scan", str(root / "evil/unknown_global.pt"), *reviewed], capsys)[0] == 0
    assert _cli(["scan", str(root / "evil/p0_global.pkl"), "--fail-on", "unsafe"], capsys)[0] == 1
    code, _, err = _cli(["scan", str(model_dir / "missing.pt")], capsys)
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    code, _, err = _cli(["scan", str(model_dir), "--fail-on", "sometimes"], capsys)
    assert code == 2 and "--fail-on" in err
    assert _cli(["scan"], capsys)[0] == 2


def test_json_is_one_object_per_file(model_dir: Path, capsys) -> None:
    code, out, _ = _cli(["scan", str(model_dir), "--format", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "safe"
    assert sorted(Path(f["path"]).name for f in data["files"]) == [
        "config.json",
        "model.safetensors",
        "state_dict.pt",
    ]
    for f in data["files"]:
        assert set(f) >= {"path", "format", "verdict", "findings", "sha256", "size"}


def test_sarif_output(corpus, tmp_path: Path, capsys) -> None:
    root, _ = corpus
    out = tmp_path / "scan.sarif"
    code, _, _ = _cli(
        ["scan", str(root / "evil/p0_global.pkl"), "--format", "sarif", "-o", str(out)], capsys
    )
    sarif = json.loads(out.read_text())
    assert code == 1 and sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert any(r["ruleId"] == "MLW-SCAN-001" for r in results)


def test_config_allow(corpus, tmp_path: Path, capsys) -> None:
    root, _ = corpus
    cfg = tmp_path / "mlwarden.toml"
    cfg.write_text('[checks.scan]\nallow = ["scan_corpus._Unlisted"]\n')
    target = str(root / "evil/unknown_global.pt")
    assert _cli(["scan", target, "--config", str(cfg)], capsys)[0] == 0


def test_pin_and_verify(model_dir: Path, tmp_path: Path, capsys) -> None:
    lock = tmp_path / "mlwarden.lock"
    assert _cli(["scan", str(model_dir), "--pin", str(lock)], capsys)[0] == 0
    pins = json.loads(lock.read_text())["files"]
    assert len(pins) == 3 and all(len(p["sha256"]) == 64 for p in pins.values())
    assert _cli(["scan", "--verify", str(lock)], capsys)[0] == 0  # roots come from the lock

    (model_dir / "config.json").write_text('{"hidden": 4}')  # changed
    (model_dir / "extra.bin").write_bytes(b"\x00\x01")  # appeared
    (model_dir / "model.safetensors").unlink()  # missing
    result = verify_lock(scan_path(model_dir), lock)
    ids = sorted(f.id for f in result.all_findings())
    assert ids.count("MLW-SCAN-070") == 1 and ids.count("MLW-SCAN-071") == 1
    assert ids.count("MLW-SCAN-072") == 1
    code, out, _ = _cli(["scan", str(model_dir), "--verify", str(lock), "-f", "json"], capsys)
    assert code == 1 and json.loads(out)["findings"][0]["id"] == "MLW-SCAN-072"
    assert _cli(["scan", str(model_dir), "--pin", str(lock), "--verify", str(lock)], capsys)[0] == 2


def test_lock_paths_are_relative_to_the_lock(model_dir: Path, tmp_path: Path) -> None:
    lock = write_lock(scan_path(model_dir), tmp_path / "locks" / "mlwarden.lock")
    pins = json.loads(lock.read_text())["files"]
    assert all(k.startswith("../teacher/") for k in pins)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_scan_command_imports_nothing_heavy(model_dir: Path, fmt: str) -> None:
    """Start-up is the cost of a scan of one file: no torch, and off a terminal no
    Typer, Click, Rich or pydantic either (they cost more than the scan itself)."""
    code = (
        "import sys; from mlwarden.cli.main import run\n"
        f"try:\n    run(['scan', sys.argv[1], '-f', '{fmt}'])\nexcept SystemExit as e:\n"
        "    heavy = [m for m in ('torch', 'typer', 'click', 'rich', 'pydantic')"
        " if m in sys.modules]\n"
        "    assert not heavy, f'imported {heavy}'; sys.exit(e.code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr


def test_audit_check_adds_findings_table_and_metrics(corpus) -> None:
    from mlwarden.audit.registry import AuditContext, check_spec

    root, _ = corpus
    spec = check_spec("scan")
    ctx = AuditContext(model_source=str(root / "evil/model.bin"))
    spec.run(ctx, spec.config())
    assert ctx.report.metrics["scan.files"] == 1 and ctx.report.metrics["scan.unsafe"] == 1
    assert any(f.id == "MLW-SCAN-001" and f.check == "scan" for f in ctx.report.findings)
    assert ctx.report.tables[0].id == "scan-files"
    ctx2 = AuditContext(model_source=None)
    spec.run(ctx2, spec.config(paths=[str(root / "benign")]))
    assert ctx2.report.metrics["scan.unsafe"] == 0 and ctx2.report.metrics["scan.files"] > 10
