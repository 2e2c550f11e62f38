"""API keys: a public prefix and a secret, stored only as a hash, checked in constant time.

A key reads ``mlw_<prefix>_<secret>``. The prefix (8 base62 characters) names the key in
logs, the audit trail and ``mlwarden keys list``; the secret (32 bytes of
``secrets.token_urlsafe``) never leaves the client. Because the secret is 256 random bits,
one SHA-256 is the right hash (a slow password hash buys nothing against brute force of
such a space and would cost milliseconds per request); the comparison is
`hmac.compare_digest`, and an unknown prefix still costs one hash and one comparison so
response time does not reveal whether a prefix exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from mlwarden.core.errors import ConfigError, InputError
from mlwarden.gateway.config import SCOPES, KeyEntry, OutputLevel
from mlwarden.gateway.errors import forbidden, unauthorized

KEY_MARK = "mlw"
_ALPHABET = string.ascii_letters + string.digits
_DUMMY_HASH = "sha256:" + "0" * 64


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_key(api_key: str) -> tuple[str, str] | None:
    """``mlw_<prefix>_<secret>`` -> (prefix, secret), or None when malformed."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARK or not parts[1] or not parts[2]:
        return None
    if len(api_key) > 200:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: ``api_key`` is shown once, ``entry`` is what is stored."""

    api_key: str
    entry: KeyEntry


def generate_key(
    name: str = "", scopes: tuple[str, ...] = ("predict",), output: OutputLevel | None = None
) -> NewKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    secret = secrets.token_urlsafe(32)
    try:
        entry = KeyEntry(
            prefix=prefix,
            hash=hash_secret(secret),
            name=name,
            scopes=tuple(scopes),
            output=output,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    except ValidationError as exc:
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise InputError(f"invalid key settings: {msg}") from None
    return NewKey(f"{KEY_MARK}_{prefix}_{secret}", entry)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's prefix, name, scopes and output detail."""

    prefix: str
    name: str
    scopes: frozenset[str]
    output: OutputLevel | None


class KeyStore:
    """Keys from the config and an optional JSON key file, reloaded when the file changes.

    Reloading on modification time means ``mlwarden keys revoke`` takes effect on a
    running gateway (and on every replica that reads the same file) without a restart.
    """

    def __init__(self, entries: list[KeyEntry] | None = None, key_file: Path | None = None) -> None:
        self._inline = list(entries or [])
        self.key_file = Path(key_file) if key_file is not None else None
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._by_prefix: dict[str, KeyEntry] = {}
        self._rebuild(read_key_file(self.key_file) if self.key_file else [])

    def _rebuild(self, file_entries: list[KeyEntry]) -> None:
        table: dict[str, KeyEntry] = {}
        for e in [*self._inline, *file_entries]:
            # a revocation anywhere wins over an active copy of the same prefix
            if e.prefix in table and table[e.prefix].revoked:
                continue
            table[e.prefix] = e
        self._by_prefix = table
        if self.key_file is not None and self.key_file.exists():
            self._mtime = self.key_file.stat().st_mtime_ns

    def _maybe_reload(self) -> None:
        if self.key_file is None:
            return
        try:
            mtime = self.key_file.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._rebuild(read_key_file(self.key_file))
                except ConfigError:
                    pass  # a half-written file: keep the last good table, retry next time

    def __len__(self) -> int:
        return len(self._by_prefix)

    def active(self) -> int:
        """How many keys authenticate (not revoked): zero means every request gets a 401."""
        return sum(not e.revoked for e in self._by_prefix.values())

    def authenticate(self, api_key: str | None) -> Principal | None:
        """The principal for a valid, unrevoked key; None otherwise (no reason given)."""
        self._maybe_reload()
        parts = split_key(api_key) if api_key else None
        prefix, secret = parts if parts else ("", api_key or "")
        entry = self._by_prefix.get(prefix)
        expected = entry.hash if entry is not None else _DUMMY_HASH
        ok = hmac.compare_digest(hash_secret(secret).encode(), expected.encode())
        if not ok or entry is None or entry.revoked or parts is None:
            return None
        return Principal(entry.prefix, entry.name, frozenset(entry.scopes), entry.output)


# -- the request's credentials ---------------------------------------------------------

API_KEY_HEADER = "x-api-key"


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer <key>``.

    ``headers`` has lower-case names (ASGI's, or Starlette's case-insensitive mapping).
    Another scheme (``Basic ...``) presents no key.
    """
    key = headers.get(API_KEY_HEADER)
    if key is None:
        auth = headers.get("authorization")
        if auth is not None:
            kind, _, value = auth.partition(" ")
            key = value.strip() if kind.lower() == "bearer" else None
    return key


class Authenticator:
    """The authenticate step: the principal of a request's key, or the refusal.

    With auth disabled every request is anonymous (None). A missing, unknown, wrong or
    revoked key is one identical 401; a valid key without ``scope`` is a 403.
    """

    def __init__(self, keys: KeyStore, enabled: bool = True) -> None:
        self.keys = keys
        self.enabled = enabled

    def __call__(self, headers: Mapping[str, str], scope: str) -> Principal | None:
        principal = self.identify(headers)
        self.authorize(principal, scope)
        return principal

    def identify(self, headers: Mapping[str, str]) -> Principal | None:
        """Who the request's key says it is (401 when no valid key): known before the scope
        check, so a 403 can be audited with the key that overstepped."""
        if not self.enabled:
            return None
        principal = self.keys.authenticate(api_key_from_headers(headers))
        if principal is None:
            raise unauthorized()
        return principal

    @staticmethod
    def authorize(principal: Principal | None, scope: str) -> None:
        """403 unless ``principal`` holds ``scope`` (None: auth is off, everything goes)."""
        if principal is not None and scope not in principal.scopes:
            raise forbidden(f"this key lacks the '{scope}' scope")


def client_id(principal: Principal | None, address: str) -> str:
    """Whom rate flags and monitors track: the key's prefix, or the address without auth."""
    return principal.prefix if principal is not None else f"addr:{address}"


# -- the key file ----------------------------------------------------------------------


def read_key_file(path: Path) -> list[KeyEntry]:
    """Entries of a JSON key file (``{"keys": [...]}``); a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        raw = data["keys"]
        if not isinstance(raw, list):
            raise TypeError
        return [KeyEntry.model_validate(item) for item in raw]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ConfigError(f"key file '{path}' is not a JSON object with a 'keys' list") from None
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise ConfigError(f"key file '{path}' has an invalid entry: {msg}") from None


def write_key_file(path: Path, entries: list[KeyEntry]) -> None:
    """Write atomically (temp file + rename) with mode 0600: hashes are still secrets' kin."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"keys": [e.model_dump(mode="json") for e in entries]}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def add_key(
    path: Path, name: str = "", scopes: tuple[str, ...] = ("predict",),
    output: OutputLevel | None = None,
) -> NewKey:
    entries = read_key_file(path)
    new = generate_key(name, scopes, output)
    write_key_file(path, [*entries, new.entry])
    return new


def revoke_key(path: Path, prefix_or_name: str) -> KeyEntry:
    """Mark the key with this prefix (or unique name) revoked; entries are kept for audit."""
    entries = read_key_file(path)
    hits = [i for i, e in enumerate(entries) if e.prefix == prefix_or_name]
    if not hits:
        hits = [i for i, e in enumerate(entries) if e.name and e.name == prefix_or_name]
    if not hits:
        raise InputError(f"no key with prefix or name '{prefix_or_name}' in '{path}'")
    if len(hits) > 1:
        raise InputError(f"name '{prefix_or_name}' matches {len(hits)} keys; give the prefix")
    i = hits[0]
    entries[i] = entries[i].model_copy(update={"revoked": True})
    write_key_file(path, entries)
    return entries[i]


__all__ = [
    "API_KEY_HEADER",
    "SCOPES",
    "Authenticator",
    "KeyStore",
    "NewKey",
    "Principal",
    "add_key",
    "api_key_from_headers",
    "client_id",
    "generate_key",
    "hash_secret",
    "read_key_file",
    "revoke_key",
    "split_key",
    "write_key_file",
]
