"""Load an encrypted model (``mlwarden encrypt``) without writing its plaintext anywhere.

The same gate as for a file in the clear, in the same order, on the bytes that will
load: the signature policy on the encrypted file as stored, then decryption into
anonymous memory (authenticated: a tampered or truncated file stops here), then the
scanner on the decrypted bytes, then the ``.pt2`` runtime-code rule, then the load from
memory (``torch.export.load`` and ``torch.load`` read file objects).

An encrypted Hugging Face folder (``mlwarden encrypt FOLDER``: one archive) passes the
signature policy and decryption the same way, then `mlwarden.io.hf_memory` applies the
folder gate to each decrypted file and builds the model and tokenizer from memory.

The key is ``[supplychain] key_file`` of the configuration, else ``$MLWARDEN_MODEL_KEY``
or the file ``$MLWARDEN_MODEL_KEY_FILE`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError
from mlwarden.io.gate import _refuse_pt2_runtime_code

if TYPE_CHECKING:
    from mlwarden.core.spec import SpecInput
    from mlwarden.supplychain.encryption import InMemoryFile
    from mlwarden.supplychain.results import FileScan

LOADABLE = (".pt2", ".pt", ".pth", ".bin", ".ckpt")


def policy_key_file(policy: Any) -> str | None:
    """``[supplychain] key_file`` of the active policy, if it names one."""
    return getattr(policy, "key_file", None) if policy is not None else None


def _decrypt_signed(file: Path) -> InMemoryFile:
    """The signature policy on the file as stored, then authenticated decryption to memory."""
    from mlwarden.supplychain.encryption import decrypt_to_memory, read_key
    from mlwarden.supplychain.signing import active_policy, enforce_signature_policy

    enforce_signature_policy(file)
    plain = decrypt_to_memory(file, read_key(policy_key_file(active_policy())))
    if len(plain) == 0:
        raise ModelLoadError(f"'{file}' decrypts to an empty file")
    return plain


def open_encrypted(path: str | Path, *, allow: Sequence[str] = ()) -> InMemoryFile:
    """Gate and decrypt ``path``: signature policy, decryption, scan, ``.pt2`` rule."""
    from mlwarden.supplychain.encryption import FOLDER_SUFFIX

    file = Path(path)
    plain = _decrypt_signed(file)
    if plain.suffix == FOLDER_SUFFIX:
        raise ModelLoadError(f"'{file}' is an encrypted model folder, not a model file")
    _scan(plain, file, allow)
    if plain.suffix.lower() == ".pt2":
        _refuse_pt2_runtime_code(plain)  # type: ignore[arg-type] - zipfile reads file objects
    plain.seek(0)
    return plain


def load_encrypted(
    path: str | Path,
    *,
    factory: str | None = None,
    spec: SpecInput | None = None,
    device: str = "auto",
    allow: Sequence[str] = (),
) -> Any:
    """A `Classifier` from an encrypted ``.pt2`` or weights file, or a `TextEncoder` /
    `TextClassifier` from an encrypted Hugging Face folder, loaded from memory."""
    from mlwarden.io.models import load_pt2, load_weights
    from mlwarden.supplychain.encryption import FOLDER_SUFFIX, read_header_suffix

    file = Path(path)
    if read_header_suffix(file) == FOLDER_SUFFIX:
        from mlwarden.io.hf_memory import load_hf_archive

        if factory is not None or spec is not None:
            raise ModelLoadError(
                f"'{file}' is an encrypted Hugging Face folder: it carries its own "
                "architecture and spec, drop the factory and spec"
            )
        plain = _decrypt_signed(file)
        return load_hf_archive(plain, str(file), device=device, allow=allow)
    plain = open_encrypted(file, allow=allow)
    suffix = plain.suffix.lower()
    if suffix not in LOADABLE:
        raise ModelLoadError(
            f"'{file}' holds a '{suffix or 'suffix-less'}' file; encrypted models load from "
            f"memory as {', '.join(LOADABLE)}"
        )
    named = file.with_name(file.name.removesuffix(".enc"))  # names in messages and the spec
    if suffix == ".pt2":
        if factory is not None:
            raise ModelLoadError(f"'{named.name}' carries its own architecture, drop the factory")
        return load_pt2(named, spec=spec, device=device, data=plain)  # type: ignore[arg-type]
    if factory is None:
        raise ModelLoadError(
            f"'{named.name}' holds only weights; name the architecture with a factory "
            "such as 'mlwarden.models:SmallCNN' (factory=, --factory or [model] factory)"
        )
    return load_weights(named, factory, spec=spec, device=device, allow=allow, data=plain)


def scan_decrypted(plain: InMemoryFile, file: Path, allow: Sequence[str] = ()) -> FileScan:
    """The scanner's findings on the decrypted bytes of ``file`` (never raises on content)."""
    from mlwarden.supplychain.context import ScanContext, ScanLimits
    from mlwarden.supplychain.policy import Policy
    from mlwarden.supplychain.results import FileScan, verdict_of
    from mlwarden.supplychain.scanner import scan_buffer

    label = f"{file}<decrypted>"
    ctx = ScanContext(label=label, policy=Policy(allow), limits=ScanLimits())
    fmt = scan_buffer(plain.buffer, ctx, name=file.name.removesuffix(".enc"), base=None)
    ctx.finish()
    return FileScan(label, fmt, verdict_of(ctx.findings), None, len(plain), ctx.findings)


def _scan(plain: InMemoryFile, file: Path, allow: Sequence[str]) -> None:
    """The scanner's verdict on the decrypted bytes, as `ensure_safe` applies it."""
    from mlwarden.supplychain.results import Verdict

    scan = scan_decrypted(plain, file, allow)
    if scan.verdict is Verdict.UNREADABLE:
        raise ModelLoadError(
            f"'{file}' decrypts to a file the scanner cannot parse ({scan.format})"
        )
    if scan.verdict.rank >= Verdict.SUSPICIOUS.rank:
        worst = sorted(scan.findings, key=lambda f: f.severity.rank, reverse=True)[:3]
        reasons = "; ".join(f"{f.location}: {f.detail}" for f in worst)
        raise UnsafeArtefactError(
            f"refused '{file}' ({scan.format}, decrypted, verdict {scan.verdict.value}): {reasons}",
            hint="inspect it with 'mlwarden decrypt' and 'mlwarden scan'",
        )
