"""Keras models: ``Lambda`` layers carry marshalled Python bytecode that runs on load
(CVE-2024-3660 for ``safe_mode`` bypasses), and custom objects import user modules.

``.keras`` is a zip whose ``config.json`` we walk; legacy ``.h5`` keeps the same JSON
in the ``model_config`` attribute, which we find by its bytes (no h5py, no TensorFlow).
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlwarden.supplychain.context import ScanContext

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_LAMBDA_BYTES = re.compile(rb'"class_name":\s*"(Lambda|__lambda__)"')
_MODULE_BYTES = re.compile(rb'"module":\s*"([^"]{1,200})"')


def _walk(node: Any, found: list[tuple[str, str]], depth: int = 0) -> None:
    if depth > 200:
        return
    if isinstance(node, dict):
        cls = node.get("class_name")
        if cls in ("Lambda", "__lambda__"):
            config = node.get("config")
            name = config.get("name") if isinstance(config, dict) else None
            found.append(("lambda", str(name or node.get("name") or "")))
        module = node.get("module")
        registered = node.get("registered_name")
        if isinstance(module, str) and not module.startswith(
            ("keras", "tf_keras", "tensorflow.keras")
        ):
            found.append(("custom", f"{module}.{cls}"))
        elif isinstance(registered, str) and ">" in registered:
            found.append(("custom", registered))
        for v in node.values():
            _walk(v, found, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _walk(v, found, depth + 1)


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
        else:
            ctx.add(
                "MLW-SCAN-051",
                f"custom object {what} must be importable to load the model: its module "
                "runs on import",
                member=member,
                object=what,
            )


def scan_keras_config(raw: bytes, ctx: ScanContext, member: str | None) -> None:
    """Check a ``.keras`` archive's ``config.json``."""
    ctx.members += 1
    try:
        config = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        ctx.add(
            "MLW-SCAN-020", f"Keras config.json is not valid JSON: {str(exc)[:100]}", member=member
        )
        return
    found: list[tuple[str, str]] = []
    _walk(config, found)
    _report(found, ctx, member)


def scan_hdf5(buf: Any, ctx: ScanContext) -> bool:
    """Find Lambda layers in a legacy Keras ``.h5``; True when it holds a Keras config."""
    ctx.members += 1
    found: list[tuple[str, str]] = []
    is_keras = buf.find(b'"class_name"') >= 0
    for m in _LAMBDA_BYTES.finditer(buf):
        found.append(("lambda", f"at byte {m.start()}"))
    for m in _MODULE_BYTES.finditer(buf):
        module = m.group(1).decode("utf-8", "replace")
        if not module.startswith(("keras", "tf_keras", "tensorflow.keras")):
            found.append(("custom", module))
    _report(found, ctx, None)
    return is_keras
