"""Keras models: ``Lambda`` layers carry marshalled Python bytecode that runs on load
(CVE-2024-3660 for ``safe_mode`` bypasses), and custom objects import user modules.

``.keras`` is a zip whose ``config.json`` we parse and walk; legacy ``.h5`` keeps the
same JSON in the ``model_config`` attribute, whose string we find in the file and parse
(no h5py, no TensorFlow).
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlwarden.supplychain.context import ScanContext

_KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
_LAMBDAS = ("Lambda", "__lambda__")
_OP_LAMBDAS = ("TFOpLambda", "SlicingOpLambda")  # call the TF API function they name
_MAX_DEPTH = 200


def _is_keras_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in _KERAS_MODULES)


def _walk(node: Any, found: list[tuple[str, str]], depth: int = 0) -> None:
    """Collect ``(kind, what)`` for everything in a config that imports or runs code, the
    way ``keras.saving.deserialize_keras_object`` reads ``module``, ``class_name`` and
    ``registered_name`` (Keras 3) or ``class_name`` alone (Keras 2)."""
    if depth > _MAX_DEPTH:
        found.append(("deep", f"nested more than {_MAX_DEPTH} levels"))
        return
    if isinstance(node, dict):
        cls = node.get("class_name")
        if cls in _LAMBDAS:
            config = node.get("config")
            name = config.get("name") if isinstance(config, dict) else None
            found.append(("lambda", str(name or node.get("name") or "")))
        elif cls in _OP_LAMBDAS:
            config = node.get("config")
            fn = config.get("function") if isinstance(config, dict) else None
            found.append(("custom", f"{cls} calling {fn}"))
        module = node.get("module")
        registered = node.get("registered_name")
        if isinstance(module, str) and not _is_keras_module(module):
            # a function object names its callable in "config" (CVE-2025-1550 style)
            target = node.get("config") if cls == "function" else cls
            found.append(("import", f"{module}.{target}"))
        elif isinstance(registered, str) and ">" in registered:
            found.append(("custom", registered))
        for v in node.values():
            _walk(v, found, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found, depth + 1)
    elif isinstance(node, str) and node[:1] == "{" and len(node) < (16 << 20):
        try:  # a config serialised as a string inside the config
            inner = json.loads(node)
        except (ValueError, RecursionError):
            return
        _walk(inner, found, depth + 1)


def _report(found: list[tuple[str, str]], ctx: ScanContext, member: str | None) -> None:
    for kind, what in found:
        if kind == "lambda":
            ctx.add(
                "MLW-SCAN-050",
                f"Lambda layer {what!r} holds serialised Python code that runs when the "
                "model is loaded with safe_mode=False (or by a vulnerable Keras)",
                member=member,
                layer=what,
            )
        elif kind == "deep":
            ctx.add("MLW-SCAN-061", f"Keras config {what}; not checked", member=member)
        elif kind == "import":
            module, _, name = what.rpartition(".")
            from mlwarden.supplychain.policy import ImportClass

            dangerous = ctx.policy.classify(module, name) is ImportClass.DANGEROUS
            ctx.add(
                "MLW-SCAN-056" if dangerous else "MLW-SCAN-051",
                f"config imports {what}: keras imports the module and calls what it names "
                "when the model is loaded" + (" (a known-dangerous callable)" if dangerous else ""),
                member=member,
                object=what,
            )
        else:
            ctx.add(
                "MLW-SCAN-051",
                f"custom object {what} must be importable to load the model: its module "
                "runs on import",
                member=member,
                object=what,
            )


def is_keras_config(doc: Any) -> bool:
    """A Keras model config: a ``class_name`` with a ``config`` (Keras 2 and 3 layouts)."""
    return isinstance(doc, dict) and "class_name" in doc and "config" in doc


def walk_keras_config(doc: Any, ctx: ScanContext, member: str | None) -> None:
    """Findings for Lambda layers and custom objects anywhere in a parsed config (nested
    models, functional graphs, layers wrapped in other layers)."""
    ctx.members += 1
    found: list[tuple[str, str]] = []
    _walk(doc, found)
    _report(found, ctx, member)


def scan_keras_config(raw: bytes, ctx: ScanContext, member: str | None) -> None:
    """Check a ``.keras`` archive's ``config.json`` (parsed as JSON, so any spelling of a
    key, escapes included, reads as Keras reads it)."""
    try:
        config = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        ctx.add(
            "MLW-SCAN-020", f"Keras config.json is not valid JSON: {str(exc)[:100]}", member=member
        )
        return
    walk_keras_config(config, ctx, member)


_JSON_START = re.compile(rb"\{\s*\"")
_MAX_H5_JSON = 64 << 20
_NUL = re.compile(rb"\x00")


_MAX_CANDIDATES = 100_000


def _h5_json_documents(buf: Any) -> list[Any]:
    """Every JSON object stored as a string in the file (attributes ``model_config``,
    ``training_config``...), parsed with ``json.JSONDecoder.raw_decode`` from each
    ``{"`` in the bytes up to the NUL that ends the string. HDF5 keeps a compact or
    dense attribute's value contiguous, so h5py is not needed to read it. The file is
    searched in place (``re`` reads an mmap without copying it)."""
    docs: list[Any] = []
    decoder = json.JSONDecoder()
    pos, tries = 0, 0
    while len(docs) < 64 and tries < _MAX_CANDIDATES:
        m = _JSON_START.search(buf, pos)
        if m is None:
            break
        tries += 1
        start = m.start()
        nul = _NUL.search(buf, start, start + _MAX_H5_JSON)
        end = nul.start() if nul is not None else min(len(buf), start + _MAX_H5_JSON)
        try:
            doc, used = decoder.raw_decode(bytes(buf[start:end]).decode("utf-8"))
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        docs.append(doc)
        pos = start + max(used, 1)
    return docs


def scan_hdf5(buf: Any, ctx: ScanContext) -> bool:
    """Legacy Keras ``.h5``: True when it holds a Keras config.

    Each JSON object in the file is parsed and walked like a ``.keras`` config. A file
    that names ``model_config`` but has no config that parses fails closed (unreadable):
    the scanner would not see what ``keras.models.load_model`` reads.
    """
    ctx.members += 1
    docs = [d for d in _h5_json_documents(buf) if is_keras_config(d)]
    for doc in docs:
        walk_keras_config(doc, ctx, None)
    mentions = re.search(rb"model_config", buf) is not None
    if mentions and not docs:
        ctx.add(
            "MLW-SCAN-061",
            "HDF5 file has a model_config attribute whose JSON could not be read "
            "(stored in a layout the scanner does not parse)",
        )
    return bool(docs) or mentions
