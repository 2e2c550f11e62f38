"""GGUF files (llama.cpp): header, metadata key/values and tensor infos, no tensor data.

The layout follows ggml's ``docs/gguf.md`` and its reader ``gguf_init_from_file_impl``
(ggml/src/gguf.cpp): magic ``GGUF``, version, tensor count, key/value count (32-bit in
version 1, 64-bit after), the key/values, the tensor infos, padding to
``general.alignment`` (default 32), the data. GGUF holds no pickle; what runs code is
the chat template (``tokenizer.chat_template`` and ``tokenizer.chat_template.<name>``),
which is checked by `template_scan`.
"""

from __future__ import annotations

import struct
from typing import Any

from mlwarden.supplychain.context import ScanContext
from mlwarden.supplychain.template_scan import check_template

_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_MAX_ITEMS = 1 << 26
_MAX_TENSORS = 1 << 20


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, buf: Any, endian: str, wide: bool) -> None:
        self.buf, self.pos, self.e, self.wide = buf, 0, endian, wide

    def num(self, code: str) -> Any:
        fmt = struct.Struct(self.e + code)
        if self.pos + fmt.size > len(self.buf):
            raise _Bad(f"truncated at byte {self.pos}")
        (v,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return v

    def count(self) -> int:
        return self.num("Q" if self.wide else "I")

    def string(self, keep: bool = True) -> str | None:
        n = self.count()
        if self.pos + n > len(self.buf):
            raise _Bad(f"a string of {n} bytes runs past the end at byte {self.pos}")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        if not keep:
            return None
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"a string at byte {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.num(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string(keep)
        if vtype == _ARRAY:
            itype, n = self.num("I"), self.count()
            if n > _MAX_ITEMS or (itype != _STRING and n > len(self.buf)):
                raise _Bad(f"an array claims {n} items")
            if itype in _SCALARS:  # fixed size: skip by offset
                size = struct.calcsize(_SCALARS[itype]) * n
                if self.pos + size > len(self.buf):
                    raise _Bad("an array runs past the end of the file")
                self.pos += size
                return None
            for _ in range(n):
                self.value(itype, False)
            return None
        raise _Bad(f"unknown value type {vtype} at byte {self.pos - 4}")


def scan_gguf(buf: Any, ctx: ScanContext, member: str | None = None) -> None:
    """Parse the whole header; check chat templates and that tensors lie inside the data."""
    ctx.members += 1
    bad = lambda msg: ctx.add("MLW-SCAN-080", msg, member=member)  # noqa: E731
    if len(buf) < 8:
        bad("shorter than a GGUF header")
        return
    version = struct.unpack_from("<I", buf, 4)[0]
    endian = "<"
    if version > 0xFFFF:  # a big-endian GGUF (the version's bytes are swapped)
        version, endian = struct.unpack_from(">I", buf, 4)[0], ">"
    if version not in (1, 2, 3):
        bad(f"unsupported GGUF version {version}")
        return
    r = _Reader(buf, endian, wide=version > 1)
    r.pos = 8
    try:
        n_tensors, n_kv = r.count(), r.count()
        if n_tensors > _MAX_TENSORS or n_kv > _MAX_ITEMS:
            raise _Bad(f"header claims {n_tensors} tensors and {n_kv} key/values")
        alignment = 32
        seen: set[str] = set()
        for _ in range(n_kv):
            key = r.string() or ""
            if key in seen:
                raise _Bad(f"key {key!r} appears twice (readers disagree which one counts)")
            seen.add(key)
            vtype = r.num("I")
            keep = key.startswith("tokenizer.chat_template") or key == "general.alignment"
            value = r.value(vtype, keep)
            if key == "general.alignment":
                if not isinstance(value, int) or value <= 0 or value & (value - 1):
                    raise _Bad(f"general.alignment {value!r} is not a power of two")
                alignment = value
            elif key.startswith("tokenizer.chat_template"):
                if vtype != _STRING:
                    raise _Bad(f"{key} is not a string")
                check_template(value, ctx, member, key)
        spans = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.num("I")
            if n_dims > 8:
                raise _Bad(f"tensor {name!r} has {n_dims} dimensions")
            for _ in range(n_dims):
                r.count()
            r.num("I")  # ggml type
            offset = r.num("Q")
            if offset % alignment:
                raise _Bad(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
            spans.append((offset, name))
    except _Bad as exc:
        bad(f"GGUF header does not parse: {exc}")
        return
    data_start = r.pos + (-r.pos % alignment)
    data_len = len(buf) - data_start
    for offset, name in spans:
        if offset >= max(data_len, 1) and n_tensors:
            bad(f"tensor {name!r} starts at data offset {offset}, past the {data_len} data bytes")
            return
