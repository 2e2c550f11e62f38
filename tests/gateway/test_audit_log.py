"""The hash-chained audit log detects edits, deletions, insertions and reordering."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from typer.testing import CliRunner

from mlwarden.cli.main import app
from mlwarden.gateway.audit_log import AuditLog, verify_chain


def _write(path: Path, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("predict", key=f"k{i % 3}", status=200, input_sha256=f"{i:064x}")
    log.close()


def test_intact_chain_verifies_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    _write(path, 5)  # a restarted gateway continues the chain
    check = verify_chain(path)
    assert check.ok and check.entries == 10


def _tamper(path: Path, how: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    if how == "edit":
        entry = json.loads(lines[3])
        entry["status"] = 500
        lines[3] = json.dumps(entry) + "\n"
    elif how == "delete":
        del lines[3]
    elif how == "swap":
        lines[3], lines[4] = lines[4], lines[3]
    elif how == "insert":
        lines.insert(3, lines[2])
    path.write_text("".join(lines))


def test_each_kind_of_tampering_is_found_at_its_line(tmp_path: Path) -> None:
    for how in ("edit", "delete", "swap", "insert"):
        path = tmp_path / f"{how}.jsonl"
        _write(path, 8)
        _tamper(path, how)
        check = verify_chain(path)
        assert not check.ok and check.line == 4, (how, check)


def _append_many(path: str, tag: str) -> None:
    log = AuditLog(Path(path))
    for i in range(50):
        log.append("predict", writer=tag, i=i)
    log.close()


def test_two_processes_appending_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    check = verify_chain(path)
    assert check.ok and check.entries == 100


def test_cli_verify_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    ok = runner.invoke(app, ["audit-log", "verify", str(path), "--unkeyed"])
    assert ok.exit_code == 0 and "6 entries" in ok.stdout and "NOT authenticated" in ok.stdout
    _tamper(path, "edit")
    bad = runner.invoke(app, ["audit-log", "verify", str(path), "--unkeyed"])
    assert bad.exit_code == 1 and "line 4" in bad.output
    missing = runner.invoke(app, ["audit-log", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0
