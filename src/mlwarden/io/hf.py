"""Load a Hugging Face model folder as a `TextClassifier` or a `TextEncoder`.

The folder passes `mlwarden.io.gate.ensure_safe_folder` before transformers reads any of
it: every file is scanned, and configs that ask for remote code (``auto_map``) are refused.
Then, with ``local_files_only=True`` and never ``trust_remote_code``:

* a config whose ``architectures`` name a ``...ForSequenceClassification`` becomes a
  `TextClassifier` through ``AutoModelForSequenceClassification``, class names from
  ``id2label``;
* anything else becomes a `TextEncoder` through ``AutoModel``, pooled as a
  sentence-transformers folder declares (``modules.json`` + its Pooling config + an
  optional Normalize module); a bare encoder gets mean pooling, recorded as assumed.

Weights: ``model.safetensors`` (or its sharded index) whenever present; a pickled
``pytorch_model.bin`` only when there is no safetensors file, after the scan, and read
with ``weights_only=True``. Weights the folder lacks (a head transformers would
initialise at random) are a load error, not a warning. The spec's ``max_tokens`` is the
smallest limit the folder states (tokenizer ``model_max_length``, config
``max_position_embeddings``, sentence-transformers ``max_seq_length``).

A folder that mlwarden saved (`save_text_classifier`, a trained student) also holds
`SPEC_FILE`, the model's `TextSpec`: it carries what the folder cannot say by itself (a
``max_tokens`` narrower than the tokenizer's, the encoder's 256 for a MiniLM student) and
must agree with everything the folder does say (class names, tokenizer files, vocabulary),
or the load is refused: a spec file that contradicts its folder was edited or belongs to
another model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputError, ModelLoadError, first_line, require
from mlwarden.core.text import Pooling, TextClassifier, TextEncoder, TextSpec
from mlwarden.io.gate import ensure_safe_folder

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""Files that decide how text becomes token ids; `tokenizer_sha256` hashes those present."""
SPEC_FILE = "mlwarden_spec.json"
"""The `TextSpec` mlwarden writes beside the weights of a folder it saves."""
_UNLIMITED = 10**6  # transformers' VERY_LARGE_INTEGER stands for "the tokenizer does not say"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING_KEYS: dict[str, Pooling] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
_UNUSED_BY_ENCODER = ("pooler.",)
"""Weights an encoder may lack without harm: BERT's [CLS] pooler, which pooling replaces."""


def is_hf_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (a Hugging Face model folder)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def load_hf_folder(
    path: str | Path, *, device: str = "auto", allow: Sequence[str] = ()
) -> TextClassifier | TextEncoder:
    """Gate and load the model folder ``path``; see the module docstring for what it becomes."""
    from mlwarden.core.device import resolve_device

    folder = Path(path)
    if not is_hf_folder(folder):
        raise ModelLoadError(
            f"model folder '{folder}' has no config.json; give a model file "
            "or a Hugging Face model folder"
        )
    folder = ensure_safe_folder(folder, allow=allow)
    config_doc = _read_json(folder / "config.json")
    use_safetensors = _weights_format(folder)
    transformers: Any = require("transformers", "text")
    config = _from_pretrained(transformers.AutoConfig, folder, "its config")
    tokenizer = _from_pretrained(transformers.AutoTokenizer, folder, "its tokenizer")
    classifier = _is_sequence_classifier(config_doc)
    auto = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
    model, info = _from_pretrained(
        auto,
        folder,
        "its weights",
        config=config,
        use_safetensors=use_safetensors,
        weights_only=True,
        output_loading_info=True,
    )
    _check_complete(info, folder, classifier)
    target = resolve_device(device)
    base = _spec_fields(folder, config, tokenizer)
    if classifier:
        spec = _saved_spec(folder, TextSpec(**base, class_names=_class_names(config, folder)))
        return TextClassifier(model, tokenizer, spec, name=folder.name, device=target)
    pooling, normalize, assumed = _pooling(folder)
    max_seq = _st_max_seq_length(folder)
    if max_seq is not None:
        base["max_tokens"] = min(base["max_tokens"], max_seq)
    spec = _saved_spec(folder, TextSpec(**base, pooling=pooling, normalize=normalize))
    return TextEncoder(
        model, tokenizer, spec, name=folder.name, device=target, spec_assumptions=assumed
    )


def tokenizer_sha256(folder: str | Path) -> str:
    """SHA-256 over the names and bytes of the tokenizer files in ``folder`` (sorted)."""
    digest = hashlib.sha256()
    root = folder if hasattr(folder, "read_bytes") else Path(folder)  # or an in-memory folder
    for name in sorted(TOKENIZER_FILES):
        file = root / name
        if file.is_file():
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def save_text_classifier(model: TextClassifier, folder: str | Path) -> TextSpec:
    """Write ``model`` to ``folder`` as a Hugging Face folder: safetensors weights, config,
    tokenizer files (``model_max_length`` set to ``spec.max_tokens``, so transformers
    truncates where mlwarden does) and `SPEC_FILE`. Returns the spec written, whose
    ``tokenizer_sha256`` is that of the saved tokenizer files: `load_hf_folder` gives it back.
    """
    import copy

    out = Path(folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"'{out}' exists and is not an empty folder; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    model.model.save_pretrained(out, safe_serialization=True)
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = model.spec.max_tokens
    tokenizer.save_pretrained(out)
    spec = model.spec.model_copy(update={"tokenizer_sha256": tokenizer_sha256(out)})
    (out / SPEC_FILE).write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return spec


# -- pieces -----------------------------------------------------------------------------------
def _read_json(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"'{file}' is not valid JSON: {first_line(exc)}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadError(f"'{file}' is not a JSON object")
    return doc


def _weights_format(folder: Path) -> bool:
    """``True`` to load safetensors, ``False`` for a (scanned) pickle; no weights is an error."""
    if any((folder / n).is_file() for n in SAFETENSORS_FILES):
        return True
    if any((folder / n).is_file() for n in PICKLE_FILES):
        return False
    raise ModelLoadError(
        f"model folder '{folder}' has no PyTorch weights ({', '.join(SAFETENSORS_FILES)} or "
        f"{', '.join(PICKLE_FILES)})"
    )


def _is_sequence_classifier(config_doc: dict[str, Any]) -> bool:
    archs = config_doc.get("architectures") or []
    return isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers logs missing weights as warnings; `_check_complete` raises on them instead."""
    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _from_pretrained(factory: Any, folder: Path, what: str, **kwargs: Any) -> Any:
    """``factory.from_pretrained`` on the local folder only, failures as one clear line."""
    try:
        with _quiet_transformers():
            return factory.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False, **kwargs
            )
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, KeyError from transformers
        text = first_line(exc)
        if "trust_remote_code" in str(exc):
            from mlwarden.core.errors import UnsafeArtefactError

            raise UnsafeArtefactError(
                f"refused model folder '{folder}': loading {what} needs remote code "
                f"({text}); mlwarden never passes trust_remote_code"
            ) from exc
        raise ModelLoadError(f"cannot load {what} from '{folder}': {text}") from exc


def _saved_spec(folder: Path, found: TextSpec) -> TextSpec:
    """``found`` (what the folder says), narrowed by its `SPEC_FILE` if it has one; a spec
    file that contradicts the folder is refused."""
    file = folder / SPEC_FILE
    if not file.is_file():
        return found
    from pydantic import ValidationError

    try:
        saved = TextSpec.model_validate(_read_json(file))
    except ValidationError as exc:
        raise ModelLoadError(f"'{file}' is not a valid text spec: {first_line(exc)}") from exc
    differ = [
        name
        for name in TextSpec.model_fields
        if name != "max_tokens" and getattr(saved, name) != getattr(found, name)
    ]
    if differ:
        shown = ", ".join(f"{n} {getattr(saved, n)!r} vs {getattr(found, n)!r}" for n in differ)
        raise ModelLoadError(
            f"'{file}' contradicts its folder ({shown}): the folder changed after mlwarden saved it"
        )
    if saved.max_tokens > found.max_tokens:
        raise ModelLoadError(
            f"'{file}' states max_tokens {saved.max_tokens}, more than the folder's limit "
            f"{found.max_tokens}"
        )
    return saved


def _check_complete(info: dict[str, Any], folder: Path, classifier: bool) -> None:
    """Refuse a model whose weights do not cover it (transformers would fill in random ones)."""
    missing = [
        k
        for k in info.get("missing_keys", [])
        if classifier or not k.startswith(_UNUSED_BY_ENCODER)
    ]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        shown = [str(k) for k in (*missing, *mismatched)][:5]
        raise ModelLoadError(
            f"the weights in '{folder}' do not cover the model its config describes: "
            f"{', '.join(shown)}{' ...' if len(missing) + len(mismatched) > 5 else ''} would be "
            "initialised at random"
        )


def _spec_fields(folder: Path, config: Any, tokenizer: Any) -> dict[str, Any]:
    limits = [
        int(v)
        for v in (
            getattr(tokenizer, "model_max_length", None),
            getattr(config, "max_position_embeddings", None),
        )
        if isinstance(v, int) and 1 < v < _UNLIMITED
    ]
    if not limits:
        raise ModelLoadError(
            f"'{folder}' states no maximum length (tokenizer model_max_length or config "
            "max_position_embeddings); set model_max_length in its tokenizer_config.json"
        )
    return {
        "max_tokens": min(limits),
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_sha256": tokenizer_sha256(folder),
        "vocab_size": len(tokenizer),
        "embedding_dim": getattr(config, "hidden_size", None),
    }


def _class_names(config: Any, folder: Path) -> tuple[str, ...]:
    id2label = getattr(config, "id2label", None) or {}
    try:
        ordered = sorted((int(k), str(v)) for k, v in id2label.items())
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"'{folder}/config.json' has non-integer id2label keys") from exc
    if [i for i, _ in ordered] != list(range(len(ordered))) or len(ordered) < 2:
        raise ModelLoadError(
            f"'{folder}/config.json' id2label must map 0..C-1 (C >= 2) to class names, "
            f"got keys {[i for i, _ in ordered]}"
        )
    names = tuple(name for _, name in ordered)
    if len(set(names)) != len(names):
        raise ModelLoadError(f"'{folder}/config.json' id2label repeats a class name: {names}")
    return names


def _pooling(folder: Path) -> tuple[Pooling, bool, tuple[str, ...]]:
    """Pooling mode, normalisation and assumptions of the folder's sentence-transformers modules."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean", False, ("mean pooling assumed (the folder declares no pooling)",)
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"'{modules_file}' is not valid JSON: {first_line(exc)}") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelLoadError(f"'{modules_file}' must be a list of module objects")
    kinds = [str(m.get("type", "")) for m in modules]
    unsupported = [k for k in kinds if k not in (_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE)]
    if unsupported:
        raise ModelLoadError(
            f"'{modules_file}' uses sentence-transformers modules mlwarden does not support "
            f"yet: {', '.join(unsupported)} (supported: Transformer, Pooling, Normalize)"
        )
    transformer = [m for m in modules if m.get("type") == _ST_TRANSFORMER]
    if len(transformer) != 1 or str(transformer[0].get("path", "")).strip("./") != "":
        raise ModelLoadError(
            f"'{modules_file}' must have one Transformer module at the folder's root"
        )
    pooling_modules = [m for m in modules if m.get("type") == _ST_POOLING]
    if len(pooling_modules) != 1:
        raise ModelLoadError(f"'{modules_file}' must have exactly one Pooling module")
    config_file = _inside(folder, str(pooling_modules[0].get("path", ""))) / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"the Pooling module's config '{config_file}' is missing")
    pool_cfg = _read_json(config_file)
    chosen = [mode for key, mode in _POOLING_KEYS.items() if pool_cfg.get(key) is True]
    others = sorted(
        k
        for k, v in pool_cfg.items()
        if k.startswith("pooling_mode") and k not in _POOLING_KEYS and v is True
    )
    if others or len(chosen) != 1:
        raise ModelLoadError(
            f"'{config_file}' asks for pooling {', '.join(others + chosen) or 'none'}; mlwarden "
            "supports exactly one of mean, cls and max"
        )
    return chosen[0], _ST_NORMALIZE in kinds, ()


def _inside(folder: Path, relative: str) -> Path:
    """``folder/relative``, refusing a path that leaves the (scanned) folder."""
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ModelLoadError(f"'{folder}/modules.json' points outside the folder: {relative!r}")
    return target


def _st_max_seq_length(folder: Path) -> int | None:
    file = folder / "sentence_bert_config.json"
    if not file.is_file():
        return None
    value = _read_json(file).get("max_seq_length")
    if value is None:
        return None
    if not isinstance(value, int) or value < 2:
        raise ModelLoadError(f"'{file}': max_seq_length must be an integer >= 2, got {value!r}")
    return value


__all__ = [
    "SPEC_FILE",
    "is_hf_folder",
    "load_hf_folder",
    "save_text_classifier",
    "tokenizer_sha256",
]
