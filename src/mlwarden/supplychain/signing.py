"""Model signing and verification through OpenSSF ``model-signing``, and the gate's policy.

`sign_model` hashes every file of a model (a folder or one file) with SHA-256 and signs
the manifest with an elliptic-curve key (offline) or through Sigstore (keyless, online).
The signature is a Sigstore bundle holding a DSSE envelope over an in-toto statement,
the format of model-signing 1.x: the upstream ``model_signing verify key`` command
verifies it unchanged.

The scan verdict is bound into the signed statement: model-signing's v1.0 predicate
keeps ``serialization`` and ``resources`` and tells verifiers to ignore any other field,
so the scanner's verdict goes in a field of its own (``mlwarden_scan``), under the same
signature. Its public API builds that predicate itself, so signing goes one level down
(``model_signing._signing``: the in-toto payload and the signers); verification uses the
public API only. The bound verdict is what the scanner said *at signing time*; the load
gate never trusts it and scans the bytes again.

Where the signature lives: ``FOLDER/model.sig`` (model-signing's default name) for a
folder, ``FILE.sig`` beside a file. A file inside a signed folder is covered by the
folder's signature.

`enforce_signature_policy` is the load gate's hook (`mlwarden.io.gate.ensure_safe`):
under ``[supplychain] require_signature = true`` an unsigned or wrongly signed model is
refused (`UnsafeArtefactError`, exit 3) before it is scanned or loaded.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import os
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import (
    ConfigError,
    DependencyError,
    InputError,
    UnsafeArtefactError,
    first_line,
)

if TYPE_CHECKING:
    from mlwarden.config import SupplyChainSection
    from mlwarden.supplychain.results import ScanResult

__all__ = [
    "SIGNATURE_NAME",
    "SCAN_CLAIM",
    "SignatureCheck",
    "enforce_signature_policy",
    "generate_signing_key",
    "policy_from_config",
    "sign_model",
    "signature_path_for",
    "using_policy",
    "verify_model",
]

SIGNATURE_NAME = "model.sig"
"""Name of a folder's signature inside it (model-signing's default)."""
SCAN_CLAIM = "mlwarden_scan"
"""Field of the signed in-toto predicate that holds the scan verdict."""
PASSWORD_ENV = "MLWARDEN_SIGNING_KEY_PASSWORD"
"""Environment variable holding the password of an encrypted private key."""
SIGSTORE_TOKEN_ENV = "SIGSTORE_ID_TOKEN"
"""An OIDC identity token for Sigstore signing (CI sets it; no browser flow is started)."""
_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_EXTRA = "provenance"


@dataclass
class SignatureCheck:
    """A verified signature: what it covers, who signed, and the scan it carries."""

    model: Path
    signature: Path
    files: list[str]
    signer: str
    scan: dict[str, Any] | None = None

    @property
    def scan_verdict(self) -> str | None:
        return None if self.scan is None else str(self.scan.get("verdict"))


@dataclass
class SignResult:
    """What `sign_model` wrote."""

    model: Path
    signature: Path
    files: list[str]
    scan: dict[str, Any] = field(default_factory=dict)


def signature_path_for(path: str | Path) -> Path:
    """Where the signature of ``path`` lives: ``FOLDER/model.sig`` or ``FILE.sig``."""
    p = Path(path)
    return p / SIGNATURE_NAME if p.is_dir() else p.with_name(p.name + ".sig")


# -- keys --------------------------------------------------------------------------------
def generate_signing_key(private: str | Path, public: str | Path) -> tuple[Path, Path]:
    """Write a new P-256 key pair (PEM; the private key readable by its owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = Path(private), Path(public)
    for p in (private, public):
        if p.exists():
            raise InputError(f"'{p}' already exists; remove it or choose another name")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _read_key_file(path: Path, what: str) -> bytes:
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None


def _check_curve(key: Any, path: Path, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "")
        raise InputError(
            f"{what} '{path}' is a {kind or 'non-EC'} key; model signing uses elliptic-curve "
            "keys (P-256, P-384 or P-521)",
            hint="make a pair with 'mlwarden keygen private.pem public.pem'",
        )
    if key.curve.name not in _CURVES:
        raise InputError(f"{what} '{path}' is on curve {key.curve.name}; use P-256, P-384 or P-521")


def check_private_key(path: str | Path) -> Path:
    """Refuse a private key file model-signing cannot use, naming what is wrong with it."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "private key")
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password.encode() if password is not None else None
        )
    except TypeError:
        raise InputError(
            f"private key '{path}' is encrypted; put its password in ${PASSWORD_ENV}"
        ) from None
    except ValueError as exc:
        if password is not None and "password" in str(exc).lower():
            raise InputError(f"wrong password for private key '{path}' (${PASSWORD_ENV})") from None
        raise InputError(
            f"'{path}' is not a PEM private key ({first_line(exc)}); "
            "a public key is given to 'verify', not to 'sign'"
        ) from None
    _check_curve(key, path, "private key")
    return path


def check_public_key(path: str | Path) -> Path:
    """Refuse a public key file model-signing cannot use, naming what is wrong with it."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        hint = " (this looks like a private key; give the public one)" if b"PRIVATE" in data else ""
        raise InputError(f"'{path}' is not a PEM public key{hint}: {first_line(exc)}") from None
    _check_curve(key, path, "public key")
    return path


def _key_fingerprint(public_key_path: Path) -> str:
    """SHA-256 of the SubjectPublicKeyInfo PEM: the hint model-signing stores in a bundle."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_path.read_bytes())
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


# -- signing ------------------------------------------------------------------------------
def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError as exc:
        raise DependencyError(
            f"model signing needs the 'model-signing' package ({first_line(exc)})",
            hint=f"pip install 'mlwarden[{_EXTRA}]'",
        ) from exc
    return model_signing


def _hashing_config(model: Path, signature: Path) -> Any:
    """SHA-256 of every file, the signature and VCS folders left out, no symlinks.

    Paths to leave out are given relative to the model folder, so a moved folder still
    verifies (model-signing records the ones it used, but joined to the signing path).
    """
    ms = _model_signing()
    ignored: list[str] = [".git", ".hg", ".svn"]
    if model.is_dir():
        with contextlib.suppress(ValueError):
            ignored.append(str(signature.resolve().relative_to(model.resolve())))
    return (
        ms.hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", max_workers=2)
        .set_ignored_paths(paths=ignored, ignore_git_paths=False)
    )


def scan_claim(scan: ScanResult, allow: Sequence[str]) -> dict[str, Any]:
    """The scan verdict as signed: tool, time, verdict, per-verdict counts and findings."""
    from mlwarden import __version__

    return {
        "tool": f"mlwarden {__version__}",
        "scanned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": scan.verdict.value,
        "files": len(scan.files),
        "counts": scan.counts(),
        "allowed_imports": list(allow),
        "findings": [
            {
                "rule": f.id,
                "severity": f.severity.value,
                "location": f.location,
                "detail": f.detail,
            }
            for f in scan.all_findings()
        ],
    }


def _model_path(path: str | Path) -> Path:
    model = Path(path)
    if not model.exists():
        raise InputError(f"model path '{model}' does not exist")
    if not (model.is_dir() or model.is_file()):
        raise InputError(f"model path '{model}' is neither a folder nor a regular file")
    return model


def sign_model(
    path: str | Path,
    *,
    key: str | Path | None = None,
    sigstore: bool = False,
    signature: str | Path | None = None,
    allow: Sequence[str] = (),
) -> SignResult:
    """Scan ``path``, then sign its manifest and the scan verdict.

    A model the scanner finds suspicious, unsafe or unreadable is not signed
    (`UnsafeArtefactError`): a signature would vouch for it. An encrypted file
    (`mlwarden encrypt`) is decrypted into memory with the loaders' key and scanned there;
    the signature covers the encrypted file as stored. ``key`` signs offline;
    ``sigstore=True`` signs keyless through Sigstore (needs the network and an OIDC token
    in ``$SIGSTORE_ID_TOKEN`` or ambient CI credentials).
    """
    from mlwarden.supplychain.results import Verdict

    model = _model_path(path)
    if (key is None) == (not sigstore):
        raise InputError("sign with exactly one of a private key (--key) or --sigstore")
    sig = Path(signature) if signature is not None else signature_path_for(model)
    if key is not None:
        key = check_private_key(key)
    _model_signing()
    from model_signing._signing import signing as ms_signing

    signer = _key_signer(Path(key)) if key is not None else _sigstore_signer()

    scan = _scan_for_signing(model, allow)
    if model.is_dir():  # a re-signature replaces the old one: it is not part of the model
        scan.files = [f for f in scan.files if Path(f.path).resolve() != sig.resolve()]
    if scan.verdict.rank >= Verdict.SUSPICIOUS.rank:
        bad = [f"{f.path} ({f.verdict.value})" for f in scan.files if f.verdict is not Verdict.SAFE]
        raise UnsafeArtefactError(
            f"not signing '{model}': the scanner's verdict is {scan.verdict.value} "
            f"({', '.join(bad[:3])})",
            hint="inspect it with 'mlwarden scan'; pass reviewed imports with --allow",
        )
    claim = scan_claim(scan, allow)
    try:
        manifest = _hashing_config(model, sig).hash(model)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot hash '{model}': {first_line(exc)}") from None
    payload = ms_signing.Payload(manifest)
    payload.statement.pb.predicate.update({SCAN_CLAIM: claim})
    try:
        bundle = signer.sign(payload)
    except Exception as exc:  # noqa: BLE001 - network, OIDC and Rekor failures alike
        raise UnsafeArtefactError(f"Sigstore signing failed: {first_line(exc)}") from None
    try:
        bundle.write(sig)
    except OSError as exc:
        raise InputError(f"cannot write signature '{sig}': {exc.strerror or exc}") from None
    files = [_file_name(model, d.identifier) for d in manifest.resource_descriptors()]
    return SignResult(model, sig, files, claim)


def _file_name(model: Path, identifier: str) -> str:
    """model-signing names the one resource of a single-file model ``.``."""
    return model.name if identifier == "." else identifier


def _scan_for_signing(model: Path, allow: Sequence[str]) -> ScanResult:
    """The scan a signature vouches for; an encrypted file is scanned decrypted, in memory."""
    from mlwarden.supplychain.encryption import (
        FOLDER_SUFFIX,
        decrypt_to_memory,
        is_encrypted,
        read_header_suffix,
        read_key,
    )
    from mlwarden.supplychain.results import ScanResult
    from mlwarden.supplychain.scanner import scan_path

    if not is_encrypted(model):
        return scan_path(model, allow=allow, digest=False)
    from mlwarden.io.encrypted import policy_key_file, scan_decrypted

    plain = decrypt_to_memory(model, read_key(policy_key_file(active_policy())))
    if read_header_suffix(model) == FOLDER_SUFFIX:  # a folder: each of its files, as loads do
        from mlwarden.io.hf_memory import MemoryFolder, read_archive, scan_memory_folder

        folder = MemoryFolder(read_archive(plain, str(model)), str(model))
        return ScanResult(files=scan_memory_folder(folder, allow), roots=[str(model)])
    return ScanResult(files=[scan_decrypted(plain, model, allow)], roots=[str(model)])


def _key_signer(key: Path) -> Any:
    from model_signing._signing import sign_ec_key

    password = os.environ.get(PASSWORD_ENV)
    return sign_ec_key.Signer(key, password.encode() if password is not None else None)


def _sigstore_signer() -> Any:
    """A keyless Sigstore signer; never starts an interactive browser flow."""
    _model_signing()
    from model_signing._signing import sign_sigstore

    token = os.environ.get(SIGSTORE_TOKEN_ENV)
    if not token:
        raise InputError(
            f"keyless signing needs an OIDC identity token in ${SIGSTORE_TOKEN_ENV} "
            "(your CI's OIDC provider issues one); no browser flow is started",
            hint="sign offline with --key private.pem",
        )
    try:
        return sign_sigstore.Signer(identity_token=token, use_ambient_credentials=False)
    except Exception as exc:  # noqa: BLE001 - TUF refresh, DNS and TLS errors alike
        raise UnsafeArtefactError(
            f"Sigstore is unreachable ({first_line(exc)}); keyless signing needs the network",
            hint="sign offline with --key private.pem",
        ) from None


# -- verification ---------------------------------------------------------------------------
def verify_model(
    path: str | Path,
    *,
    key: str | Path | None = None,
    identity: str | None = None,
    issuer: str | None = None,
    signature: str | Path | None = None,
) -> SignatureCheck:
    """Verify ``path`` against its signature; raise `UnsafeArtefactError` (exit 3) if not.

    Fails closed: a missing signature, a bundle that does not parse, another signer, a
    changed, added or removed file are all refusals. ``key`` verifies a key signature
    offline; ``identity`` and ``issuer`` a Sigstore one (online).
    """
    model = _model_path(path)
    if (key is None) == (identity is None):
        raise InputError("verify with exactly one of a public key (--key) or a Sigstore identity")
    if (identity is None) != (issuer is None):
        raise InputError("a Sigstore identity needs its OIDC issuer (--issuer)")
    sig = Path(signature) if signature is not None else signature_path_for(model)
    if not sig.is_file():
        raise UnsafeArtefactError(
            f"'{model}' is not signed: no signature at '{sig}'",
            hint="sign it with 'mlwarden sign', or verify with --signature FILE",
        )
    ms = _model_signing()
    config = ms.verifying.Config()
    if key is not None:
        key = check_public_key(key)
        config.use_elliptic_key_verifier(public_key=key)
        signer = f"key sha256:{_key_fingerprint(Path(key))[:16]}"
    else:
        try:
            config.use_sigstore_verifier(identity=identity, oidc_issuer=issuer)
        except Exception as exc:  # noqa: BLE001 - TUF refresh, DNS and TLS errors alike
            raise UnsafeArtefactError(
                f"Sigstore is unreachable ({first_line(exc)}); cannot verify '{model}'"
            ) from None
        signer = f"{identity} ({issuer})"
    config.set_hashing_config(_hashing_config(model, sig))
    try:
        config.verify(model, sig)
    except Exception as exc:  # noqa: BLE001 - any failure to verify is a refusal
        raise UnsafeArtefactError(
            f"signature check failed for '{model}': {_why(exc, model)}",
            hint=f"signature '{sig}'",
        ) from None
    statement = _statement(sig)
    predicate = statement.get("predicate", {})
    files = [_file_name(model, str(r.get("name"))) for r in predicate.get("resources", [])]
    claim = predicate.get(SCAN_CLAIM)
    return SignatureCheck(model, sig, files, signer, claim if isinstance(claim, dict) else None)


def _why(exc: BaseException, model: Path) -> str:
    """model-signing's reason in one line (``InvalidSignature`` has no message)."""
    text = first_line(exc, limit=300)
    if type(exc).__name__ == "InvalidSignature":
        return "the signature does not match the signed statement (tampered signature)"
    if "Key mismatch" in text:
        return "signed with a different key than the one given"
    if text.startswith("Signature mismatch: "):
        import ast

        try:
            diffs = [str(d) for d in ast.literal_eval(str(exc).split(": ", 1)[1])]
        except (ValueError, SyntaxError):
            return text
        parts = []
        for diff in diffs:
            if diff.startswith("Hash mismatch for '"):
                parts.append("changed: " + _file_name(model, diff.split("'")[1]))
            elif diff.startswith(("Extra files", "Missing files")):
                label = "added" if diff.startswith("Extra") else "removed"
                parts.append(f"{label}: {diff.split(': ', 1)[1]}")
        return "the files differ from the signed ones (" + "; ".join(parts or diffs) + ")"
    return text


def _statement(sig: Path) -> dict[str, Any]:
    """The in-toto statement inside a verified bundle (its predicate holds the scan claim)."""
    try:
        bundle = json.loads(sig.read_text(encoding="utf-8"))
        return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnsafeArtefactError(f"signature '{sig}' changed while it was read: {exc}") from None


# -- the load gate's policy ------------------------------------------------------------------
_POLICY: contextvars.ContextVar[SupplyChainSection | None] = contextvars.ContextVar(
    "mlwarden_supplychain_policy", default=None
)


@contextlib.contextmanager
def using_policy(policy: SupplyChainSection | None) -> Iterator[None]:
    """Apply ``policy`` to every model load in this block (instead of ``./mlwarden.toml``)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def policy_from_config(path: str | Path) -> SupplyChainSection:
    """The ``[supplychain]`` table of a configuration file, key paths made absolute."""
    from pydantic import ValidationError

    from mlwarden.config import SupplyChainSection, format_validation_error

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file '{path}' does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML: {exc}") from None
    try:
        policy = SupplyChainSection.model_validate(data.get("supplychain", {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path.name, under="supplychain")) from None
    for name in ("public_key", "key_file"):
        value = getattr(policy, name)
        if value is not None and not Path(value).is_absolute():
            setattr(policy, name, str((path.resolve().parent / value).resolve()))
    return policy


def active_policy() -> SupplyChainSection | None:
    """The policy of `using_policy`, else ``[supplychain]`` of ``./mlwarden.toml``, else None."""
    from mlwarden.config import DEFAULT_CONFIG

    policy = _POLICY.get()
    if policy is not None:
        return policy
    default = Path(DEFAULT_CONFIG)
    return policy_from_config(default) if default.is_file() else None


def enforce_signature_policy(path: str | Path) -> SignatureCheck | None:
    """The load gate's hook: under ``require_signature``, refuse what does not verify.

    A file is covered by ``FILE.sig`` or, inside a signed folder, by ``FOLDER/model.sig``.
    Returns the verified signature, or None when no signature is required.
    """
    policy = active_policy()
    if policy is None or not policy.require_signature:
        return None
    target = Path(path)
    sig = signature_path_for(target)
    if target.is_file() and not sig.is_file() and (target.parent / SIGNATURE_NAME).is_file():
        target, sig = target.parent, target.parent / SIGNATURE_NAME
    try:
        return verify_model(
            target,
            key=policy.public_key if policy.identity is None else None,
            identity=policy.identity,
            issuer=policy.issuer,
            signature=sig,
        )
    except UnsafeArtefactError as exc:
        raise UnsafeArtefactError(
            f"refused '{path}' (require_signature): {exc.message}", hint=exc.hint
        ) from None
    except InputError as exc:  # the policy's own key is unusable: still a refusal
        raise UnsafeArtefactError(
            f"refused '{path}' (require_signature): {exc.message}",
            hint="fix [supplychain] public_key in mlwarden.toml",
        ) from None
