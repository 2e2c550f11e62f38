"""Load an encrypted Hugging Face folder (`encrypt_folder`) from memory, writing no plaintext.

The archive decrypts into anonymous memory (`mlwarden.io.encrypted`); its tar entries
become a `MemoryFolder`, a read-only path-like view that the folder gate and the
Hugging Face loader's own helpers (`mlwarden.io.hf`) read exactly as they read a folder
on disk, so the rules are the same code: every file is scanned (`scan_buffer` on its
bytes, judged by `gate.refuse_scans`), configs asking for remote code are refused
(`gate.refuse_remote_code`), pooling and length limits come from the same functions.

Then, from bytes: the config through its class's ``from_dict``, the weights through
``safetensors.torch.load`` (or ``torch.load(weights_only=True)`` of a scanned pickle)
into ``from_pretrained(None, config=..., state_dict=...)``, and the tokenizer through
``tokenizers.Tokenizer.from_str`` wrapped in the folder's fast tokenizer class. No
path of the folder ever reaches transformers, so nothing is cached or written.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError, first_line, require
from mlwarden.core.text import TextClassifier, TextEncoder, TextSpec

if TYPE_CHECKING:
    from mlwarden.supplychain.results import FileScan

__all__ = ["MemoryFolder", "load_hf_archive", "read_archive"]


class MemoryFolder:
    """A path inside a folder held in memory: ``/``, ``is_file``, ``read_bytes``/``read_text``,
    ``resolve`` and ``is_relative_to``, the subset `mlwarden.io.hf` and `mlwarden.io.gate`
    use. ``str()`` names the encrypted archive and the member, for messages."""

    def __init__(self, files: Mapping[str, bytes], label: str, relative: str = "") -> None:
        self.files = files
        self.label = label
        self.relative = relative

    def __truediv__(self, other: str) -> MemoryFolder:
        joined = posixpath.normpath(posixpath.join(self.relative, str(other)))
        return MemoryFolder(self.files, self.label, "" if joined == "." else joined)

    @property
    def name(self) -> str:
        return posixpath.basename(self.relative) or Path(self.label).name.removesuffix(".enc")

    def is_file(self) -> bool:
        return self.relative in self.files

    def is_dir(self) -> bool:
        prefix = self.relative + "/" if self.relative else ""
        return any(name.startswith(prefix) for name in self.files)

    def read_bytes(self) -> bytes:
        try:
            return self.files[self.relative]
        except KeyError:
            raise FileNotFoundError(str(self)) from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def resolve(self) -> MemoryFolder:
        return self  # already normalised; links do not exist in memory

    def is_relative_to(self, other: MemoryFolder) -> bool:
        if self.relative.startswith("../") or self.relative == "..":
            return False
        return not other.relative or self.relative.startswith(other.relative + "/")

    def __str__(self) -> str:
        return f"{self.label}/{self.relative}" if self.relative else self.label


def read_archive(plain: Any, label: str) -> dict[str, bytes]:
    """The regular files of the decrypted tar ``plain`` (an `InMemoryFile`: tarfile reads the
    headers, the contents are sliced from its memory); anything else in it is refused."""
    files: dict[str, bytes] = {}
    try:
        plain.seek(0)
        with tarfile.open(fileobj=plain, mode="r:") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or name.startswith(("/", "../")) or name == "..":
                    raise UnsafeArtefactError(
                        f"refused '{label}': its archive holds '{member.name}', which is not a "
                        "regular file inside the folder"
                    )
                if name in files:
                    raise UnsafeArtefactError(f"refused '{label}': '{name}' appears twice")
                start = member.offset_data  # slice the decrypted memory: one fast copy
                files[name] = bytes(plain.buffer[start : start + member.size])
    except tarfile.TarError as exc:
        raise ModelLoadError(f"'{label}' decrypts to no readable folder archive: {exc}") from None
    return files


def gate_memory_folder(folder: MemoryFolder, allow: Sequence[str]) -> None:
    """`ensure_safe_folder`'s rules on the decrypted files: scan each, judge, remote code."""
    from mlwarden.io.gate import refuse_remote_code, refuse_scans

    refuse_scans(scan_memory_folder(folder, allow), Path(folder.label))
    refuse_remote_code(folder)  # type: ignore[arg-type] - reads / is_file / read_text only


def scan_memory_folder(folder: MemoryFolder, allow: Sequence[str]) -> list[FileScan]:
    """The scanner's findings on each decrypted file of ``folder`` (never raises on content)."""
    from mlwarden.supplychain.context import ScanContext, ScanLimits
    from mlwarden.supplychain.policy import Policy
    from mlwarden.supplychain.results import FileScan, verdict_of
    from mlwarden.supplychain.scanner import scan_buffer

    if not folder.files:
        raise ModelLoadError(f"model folder '{folder}' holds no files")
    scans = []
    for name, data in sorted(folder.files.items()):
        label = str(folder / name)
        ctx = ScanContext(label=label, policy=Policy(allow), limits=ScanLimits())
        fmt = scan_buffer(data, ctx, name=posixpath.basename(name), base=None)
        ctx.finish()
        scans.append(FileScan(label, fmt, verdict_of(ctx.findings), None, len(data), ctx.findings))
    return scans


def load_hf_archive(
    plain: Any, label: str, *, device: str = "auto", allow: Sequence[str] = ()
) -> TextClassifier | TextEncoder:
    """A `TextClassifier` or `TextEncoder` from a decrypted folder archive (the
    `InMemoryFile` of `decrypt_to_memory`), as `load_hf_folder` builds one from a folder."""
    from mlwarden.core.device import resolve_device
    from mlwarden.io import hf

    folder = MemoryFolder(read_archive(plain, label), label)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"encrypted folder '{label}' has no config.json")
    gate_memory_folder(folder, allow)
    mem: Any = folder  # the hf helpers read it as they read a folder
    config_doc = hf._read_json(mem / "config.json")
    transformers: Any = require("transformers", "text")
    config = _config(transformers, config_doc, label)
    classifier = hf._is_sequence_classifier(config_doc)
    mapping = (
        transformers.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
        if classifier
        else transformers.MODEL_MAPPING
    )
    try:
        model_class = mapping[type(config)]
    except KeyError:
        raise ModelLoadError(
            f"transformers has no {'classifier' if classifier else 'model'} for "
            f"'{config_doc.get('model_type')}' configs ('{label}')"
        ) from None
    state = _state_dict(folder, label)
    try:
        with hf._quiet_transformers():
            model, info = model_class.from_pretrained(
                None, config=config, state_dict=state, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds on bad weights
        raise ModelLoadError(f"cannot build the model of '{label}': {first_line(exc)}") from exc
    hf._check_complete(info, mem, classifier)
    tokenizer = _tokenizer(transformers, folder, label)
    target = resolve_device(device)
    base = hf._spec_fields(mem, config, tokenizer)
    if classifier:
        spec = TextSpec(**base, class_names=hf._class_names(config, mem))
        return TextClassifier(model, tokenizer, spec, name=folder.name, device=target)
    pooling, normalize, assumed = hf._pooling(mem)
    max_seq = hf._st_max_seq_length(mem)
    if max_seq is not None:
        base["max_tokens"] = min(base["max_tokens"], max_seq)
    spec = TextSpec(**base, pooling=pooling, normalize=normalize)
    return TextEncoder(
        model, tokenizer, spec, name=folder.name, device=target, spec_assumptions=assumed
    )


def _config(transformers: Any, doc: dict[str, Any], label: str) -> Any:
    model_type = doc.get("model_type")
    try:
        config_class = transformers.CONFIG_MAPPING[model_type]
    except KeyError:
        raise ModelLoadError(
            f"'{label}/config.json' names model_type {model_type!r}, which transformers "
            "does not implement"
        ) from None
    return config_class.from_dict(doc)


def _state_dict(folder: MemoryFolder, label: str) -> dict[str, Any]:
    """The weights from bytes: safetensors (single or sharded) first, a scanned pickle else."""
    import safetensors.torch
    import torch

    from mlwarden.io.hf import PICKLE_FILES, SAFETENSORS_FILES

    single, index = (folder / n for n in SAFETENSORS_FILES)
    pickle_single, pickle_index = (folder / n for n in PICKLE_FILES)
    try:
        if single.is_file():
            return safetensors.torch.load(single.read_bytes())
        if index.is_file():
            return _shards(folder, index, safetensors.torch.load)

        def load_pickle(data: bytes) -> Any:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

        if pickle_single.is_file():
            return load_pickle(pickle_single.read_bytes())
        if pickle_index.is_file():
            return _shards(folder, pickle_index, load_pickle)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot read the weights in '{label}': {first_line(exc)}") from exc
    raise ModelLoadError(
        f"encrypted folder '{label}' has no PyTorch weights ({', '.join(SAFETENSORS_FILES)} "
        f"or {', '.join(PICKLE_FILES)})"
    )


def _shards(folder: MemoryFolder, index: MemoryFolder, load: Any) -> dict[str, Any]:
    doc = json.loads(index.read_text())
    names = sorted(set((doc.get("weight_map") or {}).values()))
    state: dict[str, Any] = {}
    for name in names:
        shard = folder / name
        if not shard.is_file() or not shard.is_relative_to(folder):
            raise ModelLoadError(f"'{index}' names a shard the folder lacks: {name!r}")
        state.update(load(shard.read_bytes()))
    return state


def _tokenizer(transformers: Any, folder: MemoryFolder, label: str) -> Any:
    """The folder's fast tokenizer from ``tokenizer.json`` and its configs, from memory."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    tokenizers: Any = require("tokenizers", "text")
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ModelLoadError(
            f"encrypted folder '{label}' has no tokenizer.json; a folder loads from memory "
            "with a fast tokenizer only (save it with a fast tokenizer, then encrypt it)"
        )
    kwargs: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            kwargs.update(json.loads((folder / name).read_text()))
    kwargs.pop("auto_map", None)  # refused by the gate already; never passed on
    class_name = str(kwargs.pop("tokenizer_class", "") or "PreTrainedTokenizerFast")
    if not class_name.endswith("Fast"):
        class_name += "Fast"
    fast_class = tokenizer_class_from_name(class_name) or transformers.PreTrainedTokenizerFast
    decoder = kwargs.pop("added_tokens_decoder", None)
    if isinstance(decoder, dict):
        kwargs["added_tokens_decoder"] = {
            int(k): tokenizers.AddedToken(**v) if isinstance(v, dict) else v
            for k, v in decoder.items()
        }
    try:
        backend = tokenizers.Tokenizer.from_str(file.read_text())
        return fast_class(tokenizer_object=backend, **kwargs)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises Exception subclasses
        raise ModelLoadError(f"cannot build the tokenizer of '{label}': {first_line(exc)}") from exc
