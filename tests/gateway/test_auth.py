"""API keys: hashing, constant-time lookup, key file, revocation, and the ``keys`` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlwarden.cli.main import app
from mlwarden.core.errors import InputError
from mlwarden.gateway.auth import (
    KeyStore,
    add_key,
    generate_key,
    hash_secret,
    read_key_file,
    revoke_key,
    split_key,
)


def test_key_has_public_prefix_and_only_its_hash_is_stored() -> None:
    new = generate_key("svc", ("predict", "metrics"), "labels")
    prefix, secret = split_key(new.api_key)  # type: ignore[misc]
    assert prefix == new.entry.prefix and len(secret) >= 40
    assert new.entry.hash == hash_secret(secret)
    assert secret not in new.entry.model_dump_json()
    assert generate_key().api_key != generate_key().api_key


def test_authenticate_accepts_only_the_exact_active_key() -> None:
    a, b = generate_key("a"), generate_key("b", ("metrics",), "top_k")
    store = KeyStore([a.entry, b.entry])
    assert store.authenticate(a.api_key).prefix == a.entry.prefix  # type: ignore[union-attr]
    principal = store.authenticate(b.api_key)
    assert principal is not None and principal.scopes == {"metrics"} and principal.output == "top_k"
    for bad in (None, "", a.api_key[:-1], a.api_key + "x", b.api_key.replace("mlw_", "xyz_"),
                f"mlw_{a.entry.prefix}_{b.api_key.split('_', 2)[2]}"):
        assert store.authenticate(bad) is None
    revoked = KeyStore([a.entry.model_copy(update={"revoked": True})])
    assert revoked.authenticate(a.api_key) is None


def test_key_file_add_revoke_and_live_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    one = add_key(path, "one")
    two = add_key(path, "two", ("predict", "admin"))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    store = KeyStore(key_file=path)
    assert store.authenticate(one.api_key) and store.authenticate(two.api_key)
    revoke_key(path, "one")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    assert store.authenticate(one.api_key) is None  # reloaded without restart
    assert store.authenticate(two.api_key) is not None
    assert [e.revoked for e in read_key_file(path)] == [True, False]  # kept for the audit trail
    with pytest.raises(InputError, match="no key"):
        revoke_key(path, "three")


def test_bad_key_file_and_bad_scope_are_clear(tmp_path: Path) -> None:
    from mlwarden.core.errors import ConfigError

    path = tmp_path / "k.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="'keys' list"):
        read_key_file(path)
    with pytest.raises(InputError, match="unknown scope"):
        generate_key("x", ("root",))


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "keys.json"
    res = runner.invoke(app, ["keys", "create", "--file", str(path), "--name", "ci",
                              "--scope", "predict", "--scope", "metrics", "--output", "labels"])
    assert res.exit_code == 0, res.output
    api_key = res.stdout.strip().splitlines()[0]
    assert KeyStore(key_file=path).authenticate(api_key) is not None
    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    assert "ci" in listed.stdout and api_key.split("_", 2)[2] not in listed.stdout
    prefix = json.loads(path.read_text())["keys"][0]["prefix"]
    res = runner.invoke(app, ["keys", "revoke", prefix, "--file", str(path)])
    assert res.exit_code == 0 and KeyStore(key_file=path).authenticate(api_key) is None
