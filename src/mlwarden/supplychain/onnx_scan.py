"""``.onnx`` models: external-data paths and custom operator domains.

We walk the protobuf wire format ourselves instead of calling ``onnx.load``: the
scanner must work without the optional ``onnx`` extra, and ``onnx.load`` copies every
initializer into memory, while this walker skips ``raw_data`` by offset. Field numbers
follow ``onnx/onnx.proto`` (ModelProto, GraphProto, NodeProto, TensorProto, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlwarden.supplychain.context import ScanContext

STANDARD_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "ai.onnx.preview",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.ms.internal.nhwc",
        "org.pytorch.aten",
        "pkg.onnxscript.torch_lib",
        "pkg.onnxscript.torch_lib.common",
    }
)


class _Malformed(Exception):
    pass


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: Any, start: int, end: int):  # type: ignore[no-untyped-def]
    """Yield (field number, wire type, value or (start, end)) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value
        elif wire == 1:
            pos += 8
            yield num, wire, None
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Malformed("a length-delimited field runs past its message")
            yield num, wire, (pos, pos + n)
            pos += n
        elif wire == 5:
            pos += 4
            yield num, wire, None
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos > end:
            raise _Malformed("a field runs past its message")


def _text(buf: Any, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "replace")


class _Walker:
    def __init__(self, buf: Any, ctx: ScanContext, base: Path | None, member: str | None) -> None:
        self.buf, self.ctx, self.base, self.member = buf, ctx, base, member
        self.domains: dict[str, int] = {}
        self.external: list[tuple[str, dict[str, str]]] = []

    def model(self, start: int, end: int) -> None:
        for num, wire, val in _fields(self.buf, start, end):
            if wire != 2:
                continue
            if num == 7:
                self.graph(*val, depth=0)
            elif num == 8:
                self.opset(*val)
            elif num == 25:
                self.function(*val)

    def opset(self, start: int, end: int) -> None:
        for num, wire, val in _fields(self.buf, start, end):
            if num == 1 and wire == 2:
                self.domains.setdefault(_text(self.buf, val), 0)

    def function(self, start: int, end: int) -> None:
        for num, wire, val in _fields(self.buf, start, end):
            if wire == 2 and num == 7:
                self.node(*val, depth=1)
            elif wire == 2 and num == 9:
                self.opset(*val)

    def graph(self, start: int, end: int, depth: int) -> None:
        if depth > 32:
            raise _Malformed("graphs nested deeper than 32 levels")
        for num, wire, val in _fields(self.buf, start, end):
            if wire != 2:
                continue
            if num == 1:
                self.node(*val, depth=depth)
            elif num == 5:
                self.tensor(*val)
            elif num == 15:
                self.sparse(*val)

    def node(self, start: int, end: int, depth: int) -> None:
        domain = ""
        for num, wire, val in _fields(self.buf, start, end):
            if wire != 2:
                continue
            if num == 7:
                domain = _text(self.buf, val)
            elif num == 5:
                self.attribute(*val, depth=depth)
        self.domains[domain] = self.domains.get(domain, 0) + 1

    def attribute(self, start: int, end: int, depth: int) -> None:
        for num, wire, val in _fields(self.buf, start, end):
            if wire != 2:
                continue
            if num in (6, 11):
                self.graph(*val, depth=depth + 1)
            elif num in (5, 10):
                self.tensor(*val)
            elif num in (22, 23):
                self.sparse(*val)

    def sparse(self, start: int, end: int) -> None:
        for num, wire, val in _fields(self.buf, start, end):
            if wire == 2 and num in (1, 2):
                self.tensor(*val)

    def tensor(self, start: int, end: int) -> None:
        name, entries, external = "", {}, False
        for num, wire, val in _fields(self.buf, start, end):
            if num == 8 and wire == 2:
                name = _text(self.buf, val)
            elif num == 14 and wire == 0:
                external = val == 1
            elif num == 13 and wire == 2:
                key = value = ""
                for n2, w2, v2 in _fields(self.buf, *val):
                    if w2 == 2 and n2 == 1:
                        key = _text(self.buf, v2)
                    elif w2 == 2 and n2 == 2:
                        value = _text(self.buf, v2)
                entries[key] = value
        if external or entries:
            self.external.append((name, entries))


def _escapes(location: str, base: Path | None) -> tuple[bool, Path | None]:
    """Whether ``location`` leaves the model folder; the resolved target when it stays."""
    if not location or "\x00" in location:
        return True, None
    norm = location.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm.startswith("//"):
        return True, None
    if ".." in Path(norm).parts:
        return True, None
    if base is None:
        return False, None
    target = (base / norm).resolve()
    root = base.resolve()
    if target != root and root not in target.parents:
        return True, None  # a symlink inside the folder that points outside
    return False, target


def scan_onnx(buf: Any, ctx: ScanContext, base: Path | None, member: str | None = None) -> None:
    ctx.members += 1
    walker = _Walker(buf, ctx, base, member)
    try:
        walker.model(0, len(buf))
    except (_Malformed, IndexError, UnicodeDecodeError) as exc:
        ctx.add("MLW-SCAN-042", f"not a well-formed ONNX protobuf: {exc}", member=member)
        return
    custom = sorted(d for d in walker.domains if d not in STANDARD_DOMAINS)
    for domain in custom:
        ctx.add(
            "MLW-SCAN-041",
            f"operators of domain '{domain}' need a custom-op library loaded into the "
            "runtime; review where it comes from",
            member=member,
            domain=domain,
            nodes=walker.domains[domain],
        )
    for name, entries in walker.external:
        location = entries.get("location", "")
        escapes, target = _escapes(location, base)
        if escapes:
            ctx.add(
                "MLW-SCAN-040",
                f"tensor '{name}' reads external data from {location!r}, outside the "
                "model's folder (path traversal)",
                member=member,
                tensor=name,
                external_location=location,
            )
            continue
        if target is None:
            continue
        try:
            size = os.stat(target).st_size
        except OSError:
            ctx.add(
                "MLW-SCAN-043",
                f"tensor '{name}' needs external file {location!r}, which is missing",
                member=member,
                tensor=name,
                external_location=location,
            )
            continue
        try:
            offset = int(entries.get("offset", "0") or 0)
            length = int(entries["length"]) if entries.get("length") else size - offset
        except ValueError:
            ctx.add(
                "MLW-SCAN-042",
                f"tensor '{name}' has a non-numeric external offset/length",
                member=member,
                tensor=name,
            )
            continue
        if offset < 0 or length < 0 or offset + length > size:
            ctx.add(
                "MLW-SCAN-043",
                f"tensor '{name}' reads bytes {offset}..{offset + length} of {location!r}, "
                f"which has {size}",
                member=member,
                tensor=name,
                external_location=location,
            )
