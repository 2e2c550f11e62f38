"""NumPy ``.npy`` files (and the members of ``.npz`` archives).

Object arrays are stored as a pickle after the header (``numpy.lib.format``); every
other dtype is raw bytes whose length must match the header's shape.
"""

from __future__ import annotations

import ast
import struct
from typing import Any

from mlwarden.supplychain.context import ScanContext
from mlwarden.supplychain.magic import NPY_MAGIC
from mlwarden.supplychain.pickle_reader import dtype_itemsize
from mlwarden.supplychain.pickle_scan import scan_pickle_stream


def _descr_itemsize(descr: Any) -> tuple[int | None, bool]:
    """(item size, has objects) of an ``.npy`` ``descr`` (a string or a record list)."""
    if isinstance(descr, str):
        return dtype_itemsize(descr), "O" in descr
    if isinstance(descr, list):
        total, has_obj = 0, False
        for field in descr:
            if not isinstance(field, tuple) or len(field) < 2:
                return None, False
            size, obj = _descr_itemsize(field[1])
            if size is None and not obj:
                return None, False
            count = 1
            if len(field) > 2 and isinstance(field[2], tuple):
                for d in field[2]:
                    count *= int(d)
            total += (size or 8) * count
            has_obj = has_obj or obj
        return total, has_obj
    return None, False


def scan_npy(buf: Any, ctx: ScanContext, member: str | None = None) -> None:
    """Validate the header, then check the pickle (object arrays) or the data length."""
    ctx.members += 1
    if bytes(buf[:6]) != NPY_MAGIC or len(buf) < 10:
        ctx.add("MLW-SCAN-031", "not a NumPy file: bad magic or truncated header", member=member)
        return
    major = buf[6]
    if major == 1:
        hlen, start = struct.unpack_from("<H", buf, 8)[0], 10
    elif major in (2, 3):
        if len(buf) < 12:
            ctx.add("MLW-SCAN-031", "truncated NumPy header", member=member)
            return
        hlen, start = struct.unpack_from("<I", buf, 8)[0], 12
    else:
        ctx.add("MLW-SCAN-031", f"unsupported NumPy format version {major}", member=member)
        return
    if start + hlen > len(buf) or hlen > 1 << 20:
        ctx.add("MLW-SCAN-031", f"NumPy header length {hlen} runs past the file", member=member)
        return
    try:
        text = bytes(buf[start : start + hlen]).decode("latin-1" if major < 3 else "utf-8")
        # ast.literal_eval evaluates literals only (no calls, no names): numpy itself
        # parses the header this way.
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        ctx.add("MLW-SCAN-031", "NumPy header is not a Python literal", member=member)
        return
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        ctx.add(
            "MLW-SCAN-031",
            "NumPy header must hold exactly descr, fortran_order, shape",
            member=member,
        )
        return
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        ctx.add("MLW-SCAN-031", f"NumPy header has an invalid shape {shape!r}", member=member)
        return
    data_start = start + hlen
    itemsize, has_obj = _descr_itemsize(header["descr"])
    if has_obj:
        ctx.add(
            "MLW-SCAN-032",
            "object array: numpy.load refuses it unless allow_pickle=True, which lets any "
            "pickle run; its pickle was checked",
            member=member,
            offset=data_start,
        )
        scan_pickle_stream(buf, ctx, start=data_start, member=member, max_pickles=1)
        return
    if itemsize is None:
        ctx.add("MLW-SCAN-031", f"unsupported dtype {header['descr']!r}", member=member)
        return
    count = 1
    for d in shape:
        count *= d
    expected = count * itemsize
    actual = len(buf) - data_start
    if actual != expected:
        what = "truncated" if actual < expected else "has extra bytes"
        ctx.add(
            "MLW-SCAN-031",
            f"array data {what}: {actual} bytes, the header says {expected}",
            member=member,
            expected=expected,
            actual=actual,
        )
