"""The one safety gate every model file passes before mlwarden loads it.

`ensure_safe` is the single place where loading meets scanning. The policy is the
supply-chain scanner's verdict (`mlwarden.supplychain`, a static reader that never
unpickles): any file it finds ``suspicious``, ``unsafe`` or ``unreadable`` is refused.
Imports the user reviewed (``allow``, e.g. ``"argparse.Namespace"``) are accepted.

One rule is added on top, because it is about what a *loader* runs rather than
what a pickle imports: ``torch.export.load`` loads native AOTInductor libraries and
unpickles "opaque"/custom-object constants without restrictions, so a ``.pt2``
holding either is refused outright.

Before the scan, ``[supplychain] require_signature`` (`mlwarden.supplychain.signing`)
refuses a model whose signature is missing or does not verify. Encrypted files
(`mlwarden.io.encrypted`) pass the same steps on their decrypted bytes, in memory.

A Hugging Face model folder passes `ensure_safe_folder`: every file under it is scanned
(transformers may open any of them), and a folder whose configs ask for code of its own
(``auto_map``, which transformers honours only with ``trust_remote_code``) is refused with
a message that says so; mlwarden never passes ``trust_remote_code``.

Every refusal raises `UnsafeArtefactError` (CLI exit 3); missing, empty or unreadable
paths raise `ModelLoadError` (exit 2).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ModelLoadError, ParameterError, UnsafeArtefactError

if TYPE_CHECKING:
    from mlwarden.supplychain.results import FileScan

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_MAX_LISTED = 5
REMOTE_CODE_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
)
"""Configs in which transformers reads ``auto_map`` (classes to import from the folder)."""


def ensure_safe(path: str | Path, *, allow: Sequence[str] = ()) -> Path:
    """Refuse ``path`` unless it is a readable file that is safe to load.

    ``allow`` names extra globals (``"argparse.Namespace"``) that the user trusts a
    checkpoint to import. Returns the resolved path.
    """
    file = Path(path)
    if not file.exists():
        raise ModelLoadError(f"model file '{file}' does not exist")
    if file.is_dir():
        raise ModelLoadError(f"model path '{file}' is a directory; give the model file itself")
    if not file.is_file():
        raise ModelLoadError(f"model path '{file}' is not a regular file")
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            fh.read(1)  # readable by us, not only present
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file '{file}': {exc.strerror or exc}") from exc
    if size == 0:
        raise ModelLoadError(f"model file '{file}' is empty")
    from mlwarden.supplychain.signing import enforce_signature_policy

    enforce_signature_policy(file)  # [supplychain] require_signature: before any scan
    _apply_scan_verdict(file, allow)
    if file.suffix.lower() == ".pt2":
        _refuse_pt2_runtime_code(file)
    return file


def resolve_allowed(allow: Sequence[str]) -> list[Any]:
    """Import the globals the user allowed (``"module.Name"``) for `torch.serialization`.

    Importing them is the user's explicit decision; nothing else is imported.
    """
    import importlib

    objects: list[Any] = []
    for entry in allow:
        name = entry.replace(":", ".")
        parts = name.split(".")
        obj: Any = None
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                obj = None
            break
        if obj is None:
            raise ParameterError(f"allow entry '{entry}' does not name an importable global")
        objects.append((obj, name))  # matched by the name the pickle spells
    return objects


def _apply_scan_verdict(file: Path, allow: Sequence[str]) -> None:
    """Refuse on the scanner's verdict: a file it cannot parse is a load error (exit 2),
    one that could run code or imports something unreviewed is unsafe (exit 3)."""
    from mlwarden.supplychain import ensure_scanned
    from mlwarden.supplychain.results import Verdict

    try:
        ensure_scanned(file, allow=allow, fail_on=Verdict.SUSPICIOUS)
    except UnsafeArtefactError as exc:
        if f"verdict {Verdict.UNREADABLE.value}" in exc.message:
            raise ModelLoadError(
                f"'{file}' is corrupt or truncated and was not loaded: "
                + exc.message.split("): ", 1)[-1]
            ) from None
        raise


def ensure_safe_folder(path: str | Path, *, allow: Sequence[str] = ()) -> Path:
    """Refuse a model folder unless every file in it scans safe and no config needs remote code.

    Runs before anything of the folder is parsed by transformers. Returns the resolved path.
    """
    from mlwarden.supplychain import scan_path

    folder = Path(path)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder '{folder}' does not exist or is not a folder")
    from mlwarden.supplychain.signing import enforce_signature_policy

    enforce_signature_policy(folder)  # [supplychain] require_signature: before any scan
    result = scan_path(folder, allow=allow, digest=False)
    if not result.files:
        raise ModelLoadError(f"model folder '{folder}' holds no files")
    refuse_scans(result.files, folder)
    refuse_remote_code(folder)
    return folder.resolve()


def refuse_scans(files: Sequence[FileScan], folder: Path) -> None:
    """The folder rule on the scans of its files (on disk, or decrypted in memory): any
    unsafe or suspicious file is refused (exit 3), any unreadable one is a load error."""
    from mlwarden.supplychain.results import Verdict

    refused = [f for f in files if f.verdict.rank >= Verdict.SUSPICIOUS.rank]
    unreadable = [f for f in refused if f.verdict is Verdict.UNREADABLE]
    unsafe = [f for f in refused if f.verdict is not Verdict.UNREADABLE]
    if unsafe:
        reasons = []
        for scan in unsafe[:_MAX_LISTED]:
            worst = max(scan.findings, key=lambda f: f.severity.rank, default=None)
            detail = f": {worst.detail}" if worst is not None else ""
            reasons.append(f"{_relative(scan.path, folder)} ({scan.verdict.value}{detail})")
        more = len(unsafe) - _MAX_LISTED
        raise UnsafeArtefactError(
            f"refused model folder '{folder}': " + "; ".join(reasons)
            + (f"; and {more} more" if more > 0 else ""),
            hint="inspect it with 'mlwarden scan'; pass reviewed imports with --allow",
        )
    if unreadable:
        names = [_relative(f.path, folder) for f in unreadable]
        raise ModelLoadError(
            f"model folder '{folder}' holds files the scanner cannot read, so it was not "
            f"loaded: {_listing(names)} (remove them, or check they are not corrupt)"
        )


def refuse_remote_code(folder: Path) -> None:
    """Refuse a folder whose configs name classes to import from its own Python files.

    ``folder`` may be a `mlwarden.io.hf_memory.MemoryFolder` (a decrypted folder in memory).
    """
    for name in REMOTE_CODE_CONFIGS:
        file = folder / name
        if not file.is_file():
            continue
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(f"'{file}' is not valid JSON: {exc}") from exc
        auto_map = doc.get("auto_map") if isinstance(doc, dict) else None
        if auto_map:
            names = (
                sorted(f"{k} -> {v}" for k, v in auto_map.items())
                if isinstance(auto_map, dict)
                else [str(auto_map)]
            )
            raise UnsafeArtefactError(
                f"refused model folder '{folder}': {name} needs remote code (auto_map: "
                f"{_listing(names)}); loading it would run Python code shipped with the model, "
                "and mlwarden never passes trust_remote_code",
                hint="use a checkpoint of an architecture that transformers itself implements",
            )


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


# -- .pt2 runtime code --------------------------------------------------------------------
def _refuse_pt2_runtime_code(file: Path) -> None:
    """Refuse members that ``torch.export.load`` executes or unpickles without restrictions."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(
            f"'{file}' is not a torch.export archive (not a readable zip file)"
        ) from exc
    refused: list[str] = []
    for name in names:
        rel = name.split("/", 1)[1] if "/" in name else name
        base = rel.rsplit("/", 1)[-1]
        if rel.startswith("data/aotinductor/"):
            refused.append(f"{name} (AOTInductor native code)")
        elif rel.startswith("data/constants/") and base.startswith(("custom_obj_", "opaque_obj_")):
            refused.append(f"{name} (opaque object unpickled without restrictions)")
    if refused:
        raise UnsafeArtefactError(
            f"refused '{file}': it contains {_listing(refused)}, which torch.export.load "
            "would execute or unpickle without restrictions",
        )


# -- messages ---------------------------------------------------------------------------
def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
