"""The keyed audit trail: forgeries that recompute the chain, deletions, reordering and
truncation at a checkpoint all fail `verify`; rotation keeps old entries verifiable."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from mlwarden.core.errors import ConfigError, InputError
from mlwarden.gateway.audit_log import (
    GENESIS,
    AuditKeyring,
    AuditLog,
    HeadSink,
    _canonical,
    keygen,
    open_audit_log,
    verify_chain,
)
from mlwarden.gateway.config import AuditLogConfig


def _ring(tmp_path: Path, kid: str = "k1") -> AuditKeyring:
    path = tmp_path / "audit-keys.json"
    keygen(path, kid)
    return AuditKeyring.from_file(path)


def _write(path: Path, n: int, ring: AuditKeyring | None, heads: Path | None = None,
           every: int = 1000) -> None:
    sink = HeadSink(heads, ring) if heads is not None else None
    log = AuditLog(path, keyring=ring, heads=sink, head_every=every, interval=0.001)
    for i in range(n):
        log.append("predict", key=f"k{i % 3}", status=200, input_sha256=f"{i:064x}")
        if every < 1000:
            log.flush()  # one write per entry, so checkpoints fall where the test says
    log.close()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _save(path: Path, entries: list[dict[str, object]]) -> None:
    path.write_text("".join(_canonical(e).decode() + "\n" for e in entries))


def test_keyed_chain_verifies_only_with_the_key(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    path = tmp_path / "audit.jsonl"
    _write(path, 6, ring)
    _write(path, 4, ring)  # a restarted gateway continues the chain
    check = verify_chain(path, ring)
    assert check.ok and check.entries == 10 and check.kids == ("k1",)
    assert [e["seq"] for e in _lines(path)] == list(range(1, 11))
    assert all(e["kid"] == "k1" for e in _lines(path))
    secret = ring.keys["k1"].hex()
    assert secret not in path.read_text()  # the key is never in the log
    unkeyed = verify_chain(path)
    assert not unkeyed.ok and "verify with the keyring" in unkeyed.reason
    other = _ring(tmp_path / "other", "k9")
    wrong = verify_chain(path, other)
    assert not wrong.ok and wrong.line == 1 and "not in the keyring" in wrong.reason
    same_id = _ring(tmp_path / "same-id", "k1")  # another secret under the same id
    wrong = verify_chain(path, same_id)
    assert not wrong.ok and wrong.line == 1 and "authentication code" in wrong.reason


def test_an_edit_with_the_chain_recomputed_without_the_key_is_refused(tmp_path: Path) -> None:
    """The forgery the unkeyed chain could not catch: edit line 4, then recompute every
    hash and link after it, as anyone who can write the file can."""
    ring = _ring(tmp_path)
    path = tmp_path / "audit.jsonl"
    _write(path, 8, ring)
    entries = _lines(path)
    entries[3]["status"] = 500
    prev = GENESIS
    for e in entries:
        e.pop("kid")
        e["prev"] = prev
        e.pop("hash")
        e["hash"] = hashlib.sha256(_canonical(e)).hexdigest()
        prev = e["hash"]
    _save(path, entries)
    assert verify_chain(path).ok  # consistent as an unkeyed chain: what an old verify said
    check = verify_chain(path, ring)
    assert not check.ok and check.line == 1 and "not authenticated" in check.reason
    # keeping the key id and guessing a key does not help either
    entries = _lines(path)
    forger = _ring(tmp_path / "forger")
    prev = GENESIS
    for e in entries:
        e["kid"] = "k1"
        e["prev"] = prev
        e.pop("hash")
        e["hash"] = forger.seal(_canonical(e), "k1")
        prev = e["hash"]
    _save(path, entries)
    check = verify_chain(path, ring)
    assert not check.ok and check.line == 1 and "edited" in check.reason


@pytest.mark.parametrize("how", ["edit", "delete", "swap", "insert", "drop-first"])
def test_each_kind_of_tampering_of_a_keyed_log_is_found_at_its_line(tmp_path: Path,
                                                                     how: str) -> None:
    ring = _ring(tmp_path)
    path = tmp_path / "audit.jsonl"
    _write(path, 8, ring)
    lines = path.read_text().splitlines(keepends=True)
    line = 4
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
    else:
        del lines[0]
        line = 1
    path.write_text("".join(lines))
    check = verify_chain(path, ring)
    assert not check.ok and check.line == line, check


def test_truncation_before_a_checkpoint_is_refused(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    path, heads = tmp_path / "audit.jsonl", tmp_path / "elsewhere" / "heads.jsonl"
    _write(path, 12, ring, heads, every=5)  # checkpoints at 5, 10 and 12 (close)
    assert [json.loads(h)["seq"] for h in heads.read_text().splitlines()] == [5, 10, 12]
    assert verify_chain(path, ring, heads=heads).ok
    lines = path.read_text().splitlines(keepends=True)
    for keep in (11, 7, 3):
        path.write_text("".join(lines[:keep]))
        assert verify_chain(path, ring).ok  # a valid prefix: the log alone cannot tell
        check = verify_chain(path, ring, heads=heads)
        assert not check.ok and "truncated" in check.reason and f"ends at entry {keep}" in (
            check.reason)
    # a log rewritten from scratch under the same key does not match the checkpoints either
    path.unlink()
    _write(path, 12, ring)
    check = verify_chain(path, ring, heads=heads)
    assert not check.ok and check.line == 5 and "checkpoint" in check.reason
    # and the checkpoints themselves are authenticated
    points = heads.read_text().splitlines()
    forged = json.loads(points[0])
    forged["seq"] = 1
    heads.write_text(json.dumps(forged) + "\n" + "\n".join(points[1:]) + "\n")
    with pytest.raises(InputError, match="line 1 is not an authentic checkpoint"):
        verify_chain(path, ring, heads=heads)


def test_rotation_keeps_older_entries_verifiable(tmp_path: Path) -> None:
    keys, path = tmp_path / "audit-keys.json", tmp_path / "audit.jsonl"
    keygen(keys, "2026-01")
    _write(path, 3, AuditKeyring.from_file(keys))
    keygen(keys, "2026-02")  # the new key signs from now on; the old one stays in the ring
    ring = AuditKeyring.from_file(keys)
    assert ring.active == "2026-02" and set(ring.keys) == {"2026-01", "2026-02"}
    _write(path, 3, ring)
    check = verify_chain(path, ring)
    assert check.ok and check.entries == 6 and check.kids == ("2026-01", "2026-02")
    assert [e["kid"] for e in _lines(path)] == ["2026-01"] * 3 + ["2026-02"] * 3
    newest_only = AuditKeyring({"2026-02": ring.keys["2026-02"]}, "2026-02")
    assert not verify_chain(path, newest_only).ok
    assert keys.stat().st_mode & 0o077 == 0
    with pytest.raises(InputError, match="already has a key"):
        keygen(keys, "2026-02")


def test_keys_from_the_environment_and_bad_keys(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_KEY_T", "new:" + "ab" * 32 + ", old:" + "cd" * 16)
    ring = AuditKeyring.load(None, "AUDIT_KEY_T")
    assert ring is not None and ring.active == "new" and set(ring.keys) == {"new", "old"}
    assert AuditKeyring.load(None, "AUDIT_KEY_UNSET_T") is None
    for bad in ("no-colon", "k:zz", "k:abcd"):
        monkeypatch.setenv("AUDIT_KEY_T", bad)
        with pytest.raises(ConfigError, match="AUDIT_KEY_T|shorter"):
            AuditKeyring.load(None, "AUDIT_KEY_T")
    with pytest.raises(ConfigError, match="keygen --file"):
        AuditKeyring.load(tmp_path / "missing.json", None)
    (tmp_path / "bad.json").write_text('{"active": "x"}')
    with pytest.raises(ConfigError, match="'active' and 'keys'"):
        AuditKeyring.load(tmp_path / "bad.json", None)


def test_start_up_without_a_key_warns_or_refuses(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLWARDEN_AUDIT_KEY", raising=False)
    cfg = AuditLogConfig(path=tmp_path / "a.jsonl")
    with caplog.at_level(logging.WARNING, logger="mlwarden.gateway.audit"):
        open_audit_log(cfg).close()
    assert "NOT keyed" in caplog.text and "MLWARDEN_AUDIT_KEY" in caplog.text
    with pytest.raises(ConfigError, match="require_key: no audit key"):
        open_audit_log(AuditLogConfig(path=tmp_path / "b.jsonl", require_key=True))
    monkeypatch.setenv("MLWARDEN_AUDIT_KEY", "env1:" + "11" * 32)
    log = open_audit_log(AuditLogConfig(path=tmp_path / "c.jsonl", head_file=tmp_path / "h",
                                        head_every=2))
    for i in range(3):
        log.append("predict", i=i)
    log.close()
    ring = AuditKeyring.load(None, "MLWARDEN_AUDIT_KEY")
    assert verify_chain(tmp_path / "c.jsonl", ring, heads=tmp_path / "h").ok


def test_cli_verify_needs_the_key(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MLWARDEN_AUDIT_KEY", raising=False)
    keys, path, heads = tmp_path / "k.json", tmp_path / "audit.jsonl", tmp_path / "h.jsonl"
    made = cli("audit-log", "keygen", "--file", str(keys), "--kid", "ops1")
    assert made.code == 0 and "'ops1' is now active" in made.out
    _write(path, 6, AuditKeyring.from_file(keys), heads, every=4)
    ok = cli("audit-log", "verify", str(path), "--key-file", str(keys), "--head", str(heads))
    assert ok.code == 0 and "6 entries, authenticated chain intact" in ok.out
    assert "2 checkpoints, the newest at entry 6" in ok.out
    nokey = cli("audit-log", "verify", str(path))
    assert nokey.code == 2 and "needs the audit key" in nokey.err
    unkeyed = cli("audit-log", "verify", str(path), "--unkeyed")
    assert unkeyed.code == 1 and "verify with the keyring" in unkeyed.err
    monkeypatch.setenv("MLWARDEN_AUDIT_KEY",
                       "ops1:" + AuditKeyring.from_file(keys).keys["ops1"].hex())
    assert cli("audit-log", "verify", str(path)).code == 0
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]))
    cut = cli("audit-log", "verify", str(path), "--head", str(heads))
    assert cut.code == 1 and "truncated" in cut.err
