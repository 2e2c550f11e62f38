"""Legacy ``torch.save`` formats (before the zip format of PyTorch 1.6).

*Sequential* files hold five pickles back to back (magic number, protocol version,
system info, the object, the storage keys) followed by each storage as an 8-byte
element count and raw bytes. *Tar* files (PyTorch < 0.4) hold ``sys_info``,
``pickle``, ``storages`` and ``tensors`` members in which pickles and raw data
alternate. Layouts follow ``torch/serialization.py`` (``_legacy_load``). We walk
every pickle and skip the raw data by the sizes the pickles declare, so the whole
file is accounted for.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from mlwarden.supplychain.context import ScanContext
from mlwarden.supplychain.pickle_reader import Global, PickleTrace, read_pickle
from mlwarden.supplychain.pickle_scan import judge_trace, scan_pickle_stream, starts_pickle

_ELEMENT_SIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QInt8Storage": 1,
    "QUInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}


def element_size(storage_type: Any) -> int | None:
    if isinstance(storage_type, Global) and storage_type.module == "torch":
        return _ELEMENT_SIZE.get(storage_type.name)
    return None


def _one(buf: Any, pos: int, end: int, ctx: ScanContext, member: str | None) -> PickleTrace:
    trace = read_pickle(buf, pos, end, ctx.limits.pickle)
    judge_trace(trace, ctx, member)
    return trace


def scan_legacy_sequential(
    buf: Any, ctx: ScanContext, first: PickleTrace, member: str | None = None
) -> None:
    """``first`` (the magic-number pickle) is already judged; read the rest of the file."""
    end = len(buf)
    traces = [first]
    pos = first.end
    for _ in range(4):
        trace = _one(buf, pos, end, ctx, member)
        traces.append(trace)
        if not trace.complete:
            return
        pos = trace.end
    sizes: dict[str, int] = {}
    for pid in traces[3].persistent_ids:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            size = element_size(pid[1])
            if isinstance(pid[2], str) and size is not None:
                sizes[pid[2]] = size
    keys = traces[4].result
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        ctx.add(
            "MLW-SCAN-033",
            "the storage-key pickle is not a list of keys",
            member=member,
            offset=traces[4].start,
        )
        return
    for key in keys:
        if key not in sizes:
            ctx.add(
                "MLW-SCAN-033",
                f"storage {key!r} has no known type in the object pickle",
                member=member,
                offset=pos,
            )
            return
        if pos + 8 > end:
            ctx.add(
                "MLW-SCAN-033",
                f"file ends inside storage {key!r} (truncated)",
                member=member,
                offset=pos,
            )
            return
        count = struct.unpack_from("<q", buf, pos)[0]
        nbytes = count * sizes[key]
        if count < 0 or pos + 8 + nbytes > end:
            ctx.add(
                "MLW-SCAN-033",
                f"storage {key!r} claims {count} elements, past the end of the file (truncated)",
                member=member,
                offset=pos,
            )
            return
        pos += 8 + nbytes
    if pos < end:
        ctx.add(
            "MLW-SCAN-033",
            f"{end - pos} bytes after the last storage are not part of the checkpoint",
            member=member,
            offset=pos,
            trailing_bytes=end - pos,
        )
        if starts_pickle(buf, pos, end):
            scan_pickle_stream(buf, ctx, start=pos, member=member)


def _count_header(buf: Any, ctx: ScanContext, member: str, what: str) -> tuple[int, int] | None:
    """The record count pickled at the start of a section and where the records start;
    None (with a finding when it is not a count) if it cannot be read."""
    head = _one(buf, 0, len(buf), ctx, member)
    if not head.complete:
        return None
    count = head.result
    if not isinstance(count, int) or count < 0:
        ctx.add("MLW-SCAN-033", f"{what} count is not a number", member=member)
        return None
    return count, head.end


def _storages(buf: Any, ctx: ScanContext, member: str) -> None:
    end = len(buf)
    header = _count_header(buf, ctx, member, "storage")
    if header is None:
        return
    count, pos = header
    for _ in range(count):
        t = _one(buf, pos, end, ctx, member)
        if not t.complete:
            return
        args = t.result
        size = element_size(args[2]) if isinstance(args, tuple) and len(args) == 3 else None
        if size is None or t.end + 8 > end:
            ctx.add(
                "MLW-SCAN-033",
                "storage record without a known type or size",
                member=member,
                offset=t.start,
            )
            return
        n = struct.unpack_from("<q", buf, t.end)[0]
        pos = t.end + 8 + n * size
        if n < 0 or pos > end:
            ctx.add(
                "MLW-SCAN-033",
                "storage data runs past the member (truncated)",
                member=member,
                offset=t.end,
            )
            return
    t = _one(buf, pos, end, ctx, member)  # the storage views, then nothing
    if t.complete and t.end < end:
        ctx.add(
            "MLW-SCAN-033",
            f"{end - t.end} unexplained bytes after the storages",
            member=member,
            offset=t.end,
        )


def _tensors(buf: Any, ctx: ScanContext, member: str) -> None:
    end = len(buf)
    header = _count_header(buf, ctx, member, "tensor")
    if header is None:
        return
    count, pos = header
    for _ in range(count):
        t = _one(buf, pos, end, ctx, member)
        if not t.complete:
            return
        if t.end + 8 > end:
            ctx.add("MLW-SCAN-033", "tensor record truncated", member=member, offset=t.end)
            return
        ndim = struct.unpack_from("<i", buf, t.end)[0]
        pos = t.end + 8 + 16 * max(ndim, 0) + 8
        if ndim < 0 or ndim > 64 or pos > end:
            ctx.add(
                "MLW-SCAN-033",
                "tensor record has an invalid rank or is truncated",
                member=member,
                offset=t.end,
            )
            return
    if pos < end:
        ctx.add(
            "MLW-SCAN-033",
            f"{end - pos} unexplained bytes after the tensors",
            member=member,
            offset=pos,
        )


def scan_legacy_tar(
    buf: Any,
    ctx: ScanContext,
    fileobj: Any,
    on_nested: Callable[[Any, ScanContext, str], None] | None = None,
) -> str:
    """A tar file: the legacy torch layout when its members say so, else each member
    scanned by its content (``on_nested``), one container level deeper."""
    import tarfile  # only for tar files: keeps the scanner's start-up small

    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        ctx.add("MLW-SCAN-060", f"not a readable tar archive: {exc}")
        return "tar"
    names = [m.name for m in members]
    is_torch = {"pickle", "storages", "tensors"} <= set(names)
    for name in sorted({n for n in names if names.count(n) > 1}):
        # tarfile.getmember (what torch's _legacy_load uses) returns the last copy
        ctx.add(
            "MLW-SCAN-023",
            f"tar member {name!r} appears more than once: tarfile reads the last one, "
            "other tools the first",
            member=name,
        )
    for m in members:
        if not m.isfile():
            continue
        if m.size > ctx.limits.max_member_bytes:
            ctx.add("MLW-SCAN-021", f"tar member of {m.size} bytes not expanded", member=m.name)
            continue
        fh = tar.extractfile(m)
        data = fh.read() if fh is not None else b""
        ctx.members += 1
        if is_torch and m.name == "storages":
            _storages(data, ctx, m.name)
        elif is_torch and m.name == "tensors":
            _tensors(data, ctx, m.name)
        elif is_torch and m.name in ("pickle", "sys_info"):
            scan_pickle_stream(data, ctx, member=m.name)
        elif on_nested is not None and data:
            if ctx.depth >= ctx.limits.max_nesting:
                ctx.add("MLW-SCAN-062", "archives nested too deeply; not expanded", member=m.name)
                continue
            ctx.depth += 1
            try:
                on_nested(data, ctx, m.name)
            finally:
                ctx.depth -= 1
        elif starts_pickle(data, 0, len(data)):
            trace = read_pickle(data, 0, len(data), ctx.limits.pickle)
            if trace.imports or trace.calls or m.name.endswith((".pkl", ".pt", ".pth", ".bin")):
                judge_trace(trace, ctx, m.name)
    return "pytorch-legacy-tar" if is_torch else "tar"
