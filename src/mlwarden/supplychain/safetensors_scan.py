"""``.safetensors`` header validation (format spec: huggingface/safetensors README).

The format cannot run code, but a malformed header is how parsers get attacked
(huge claimed lengths, overlapping tensors that alias memory, bytes hidden past the
last tensor). We check the header without reading tensor data.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from mlwarden.supplychain.context import ScanContext

# bits per element; sub-byte types are packed
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key '{k}'")
        out[k] = v
    return out


def scan_safetensors(
    buf: Any, ctx: ScanContext, member: str | None = None
) -> list[tuple[int, int, str]]:
    """Validate the header; return the tensors' (begin, end, name) as file offsets."""
    ctx.members += 1
    size = len(buf)
    bad = lambda msg, **ev: ctx.add("MLW-SCAN-030", msg, member=member, **ev)  # noqa: E731
    if size < 8:
        bad("file is shorter than the 8-byte header length")
        return []
    n = struct.unpack_from("<Q", buf)[0]
    if n > ctx.limits.max_safetensors_header:
        bad(
            f"header claims {n} bytes, above the {ctx.limits.max_safetensors_header}-byte limit",
            header_bytes=n,
        )
        return []
    if 8 + n > size:
        bad(
            f"header claims {n} bytes but the file has only {size - 8} after the length",
            header_bytes=n,
        )
        return []
    raw = bytes(buf[8 : 8 + n])
    if not raw.startswith(b"{"):
        bad("header does not start with '{'")
        return []
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        bad(f"header is not valid JSON: {str(exc)[:120]}")
        return []
    if not isinstance(header, dict):
        bad("header is not a JSON object")
        return []
    meta = header.pop("__metadata__", None)
    if meta is not None and (
        not isinstance(meta, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        bad("__metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            bad(f"tensor '{name}' must have exactly dtype, shape and data_offsets", tensor=name)
            continue
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BITS:
            bad(f"tensor '{name}' has unknown dtype {dtype!r}", tensor=name)
            continue
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            bad(f"tensor '{name}' has an invalid shape {shape!r}", tensor=name)
            continue
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            bad(f"tensor '{name}' has invalid data_offsets {offsets!r}", tensor=name)
            continue
        count = 1
        for d in shape:
            count *= d
        bits = count * DTYPE_BITS[dtype]
        nbytes = (bits + 7) // 8
        if offsets[1] - offsets[0] != nbytes:
            bad(
                f"tensor '{name}' spans {offsets[1] - offsets[0]} bytes but {dtype}{shape} "
                f"needs {nbytes}",
                tensor=name,
            )
        if offsets[1] > data_len:
            bad(
                f"tensor '{name}' ends at byte {offsets[1]}, past the {data_len} data bytes",
                tensor=name,
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            bad(
                f"tensor '{name}' overlaps the previous tensor (bytes {begin}..{cursor})",
                tensor=name,
            )
        elif begin > cursor:
            bad(f"{begin - cursor} unused bytes before tensor '{name}'", tensor=name)
        cursor = max(cursor, end)
    if cursor < data_len:
        bad(
            f"{data_len - cursor} bytes after the last tensor are not described by the header",
            trailing_bytes=data_len - cursor,
        )
    return [(8 + n + b, 8 + n + e, name) for b, e, name in spans if 8 + n + e <= size]


# formats that another loader could open from inside tensor bytes
_HIDDEN_MAGICS = (
    (b"PK\x03\x04", "a zip archive"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"GGUF", "a GGUF file"),
    (b"\x1f\x8b\x08", "a gzip stream"),
    (b"\xfd7zXZ\x00", "an xz stream"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
)


def check_hidden_payloads(
    buf: Any, spans: list[tuple[int, int, str]], ctx: ScanContext, member: str | None
) -> None:
    """A valid header can frame tensor bytes that are really another container (or a
    pickle): the safetensors loader never runs them, but a tool that carves them out, or
    another loader given the same file, does. Checks the start of every tensor, and the
    file itself as ``torch.load`` reads a non-zip file (a pickle from byte 0)."""
    from mlwarden.supplychain.pickle_reader import read_pickle
    from mlwarden.supplychain.pickle_scan import importable, judge_trace, starts_pickle

    first = read_pickle(buf, 0, len(buf), ctx.limits.pickle)
    if first.imports or first.calls:
        ctx.add(
            "MLW-SCAN-034",
            "the file also reads as a pickle from byte 0, which torch.load would run",
            member=member,
        )
        judge_trace(first, ctx, member)
    for begin, end, name in spans:
        head = bytes(buf[begin : begin + 8])
        what = next((w for magic, w in _HIDDEN_MAGICS if head.startswith(magic)), None)
        if what is None and starts_pickle(buf, begin, end) and head[:1] == b"\x80":
            trace = read_pickle(buf, begin, end, ctx.limits.pickle)
            real = [g for g in trace.imports if importable(g.module, g.name)]
            if real and (trace.calls or trace.complete):  # not random float bytes
                what = "a pickle"
                judge_trace(trace, ctx, member)
        if what is not None:
            ctx.add(
                "MLW-SCAN-034",
                f"the bytes of tensor '{name}' are {what}",
                member=member,
                offset=begin,
                tensor=name,
            )
