"""Zip containers: PyTorch checkpoints, ``.pt2`` archives, ``.npz``, ``.keras``.

Loaders read a zip through its central directory, while some scanners walk local
headers; an archive whose two views disagree shows each reader a different file. We
cross-check every local header against its central-directory entry, verify every
CRC, refuse flag bits and methods the standard library refuses, and account for every
byte between entries (hidden members, a pickle prepended to the archive, overlapping
entries as in "A better zip bomb", Fifield 2019).
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

from mlwarden.supplychain.context import ScanContext
from mlwarden.supplychain.magic import CHUNK, NPY_MAGIC, ZIP_MAGIC
from mlwarden.supplychain.pickle_reader import OPCODES, looks_like_pickle, read_pickle
from mlwarden.supplychain.pickle_scan import (
    importable,
    judge_trace,
    scan_pickle_stream,
    starts_pickle,
)

_LOCAL = struct.Struct("<4s5H3I2H")
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_REFUSED_FLAGS = {
    0x1: "encrypted",
    0x20: "compressed patched data",
    0x40: "strong encryption",
    0x2000: "masked local headers",
}


class _BufferFile(io.RawIOBase):
    """A read-only, seekable file over a bytes-like object, without copying it."""

    def __init__(self, buf: Any) -> None:
        self._buf = memoryview(buf) if not isinstance(buf, memoryview) else buf
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._buf)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), self._pos + n)
        out = bytes(self._buf[self._pos : end])
        self._pos = max(self._pos, end)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def torch_prefix(names: list[str]) -> str | None:
    """The folder every record of a torch zip is looked up in: the part of the *first*
    central-directory name before its first '/' (``PyTorchStreamReader::init`` in
    caffe2/serialize/inline_container.cc, which ``torch.serialization._load`` reads
    through ``zip_file.get_record``); None when that name has no folder (torch refuses)."""
    if not names or "/" not in names[0]:
        return None
    return names[0].split("/", 1)[0]


def torch_records(names: list[str]) -> dict[str, list[str]]:
    """For each record name torch looks up (``data.pkl``, ``constants.pkl``), the members
    that ``getRecord`` could return: miniz's ``mz_zip_reader_locate_file`` is called with
    flags 0, i.e. it compares names case-insensitively (a binary search over the sorted
    central directory, so which of two such members wins is not defined)."""
    prefix = torch_prefix(names)
    if prefix is None:
        return {}
    out: dict[str, list[str]] = {}
    for record in ("data.pkl", "constants.pkl"):
        want = f"{prefix}/{record}".lower()
        hits = [n for n in names if n.lower() == want]
        if hits:
            out[record] = hits
    return out


def classify_zip(names: list[str]) -> str:
    """Name the kind of zip from its members (magic bytes found it, names refine it);
    names compare case-insensitively, as torch's record lookup does."""
    names = [n.lower() for n in names]
    bases = {n.rsplit("/", 1)[-1] for n in names}
    if any(n.endswith("archive_format") for n in names) or any(
        "/models/" in n and n.endswith(".json") for n in names
    ):
        return "torch-export-pt2"
    if "constants.pkl" in bases and any("/code/" in n or n.startswith("code/") for n in names):
        return "torchscript"
    if "data.pkl" in bases:
        return "pytorch-zip"
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return "keras"  # Keras 3 reads config.json at the root, metadata.json optional
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def scan_zip(
    buf: Any,
    ctx: ScanContext,
    *,
    member: str | None = None,
    on_nested: Callable[[Any, ScanContext, str], None] | None = None,
) -> str:
    """Check the archive and every member; return the container kind."""
    prefix = f"{member}!" if member else ""
    try:
        zf = zipfile.ZipFile(_BufferFile(buf))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        struct.error,
        NotImplementedError,
    ) as exc:
        ctx.add("MLW-SCAN-020", f"not a readable zip archive: {exc}", member=member)
        if looks_like_pickle(bytes(buf[:3])):
            scan_pickle_stream(buf, ctx, member=member)
        return "zip"
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        kind = classify_zip(names)
        dupes = (
            sorted({n for n in names if names.count(n) > 1})
            if len(set(names)) != len(names)
            else []
        )
        for name in dupes:
            ctx.add(
                "MLW-SCAN-020",
                f"member name {name!r} appears more than once; loaders "
                "disagree about which one they read",
                member=prefix + name,
            )
        folded: dict[str, list[str]] = {}
        for n in set(names):
            folded.setdefault(n.lower(), []).append(n)
        for group in sorted(g for g in folded.values() if len(g) > 1):
            ctx.add(
                "MLW-SCAN-023",
                f"members {sorted(group)!r} differ only in case: torch's case-insensitive "
                "record lookup may read any of them, other tools read each",
                member=prefix + group[0],
            )
        records = torch_records(names)
        for record, hits in records.items():
            exact = f"{torch_prefix(names)}/{record}"
            if exact not in hits:
                ctx.add(
                    "MLW-SCAN-023",
                    f"torch.load reads {hits[0]!r} as {exact!r} (case-insensitive lookup)",
                    member=prefix + hits[0],
                )
        loader_reads = {n for hits in records.values() for n in hits}
        _check_layout(buf, zf, infos, ctx, prefix, member)
        outer_ts = ctx.torchscript
        if kind == "torchscript":
            code = sorted(n for n in names if "/code/" in n and n.endswith(".py"))
            ctx.add(
                "MLW-SCAN-053",
                f"TorchScript archive with {len(code)} code files: "
                "torch.jit.load runs this code and can call any registered torch op "
                "(including file I/O); review it or export to safetensors",
                member=member,
                code_files=code[:20],
            )
            ctx.torchscript = True
        try:
            for info in infos:
                _scan_member(buf, zf, info, kind, ctx, prefix, on_nested, loader_reads)
        finally:
            ctx.torchscript = outer_ts
    return kind


def _check_layout(
    buf: Any,
    zf: zipfile.ZipFile,
    infos: list[zipfile.ZipInfo],
    ctx: ScanContext,
    prefix: str,
    member: str | None,
) -> list[tuple[int, int, str]]:
    size = len(buf)
    extents: list[tuple[int, int, str]] = []
    for info in infos:
        where = prefix + info.filename
        off = info.header_offset
        if off < 0 or off + _LOCAL.size > size:
            ctx.add(
                "MLW-SCAN-020", "central directory points past the end of the file", member=where
            )
            continue
        (sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, elen) = _LOCAL.unpack_from(
            buf, off
        )
        if sig != ZIP_MAGIC:
            ctx.add(
                "MLW-SCAN-020",
                "central directory points to something that is not a local file header",
                member=where,
                offset=off,
            )
            continue
        raw_name = bytes(buf[off + 30 : off + 30 + nlen])
        expected = info.orig_filename.encode(
            "utf-8" if info.flag_bits & 0x800 else "cp437", "surrogateescape"
        )
        if raw_name != expected:
            ctx.add(
                "MLW-SCAN-020",
                f"local header names the member "
                f"{raw_name.decode('utf-8', 'replace')!r}, the central directory "
                f"{info.filename!r}",
                member=where,
                offset=off,
            )
        if method != info.compress_type:
            ctx.add(
                "MLW-SCAN-020",
                f"local header says compression {method}, central directory {info.compress_type}",
                member=where,
                offset=off,
            )
        if (flags & ~0x0808) != (info.flag_bits & ~0x0808):
            ctx.add(
                "MLW-SCAN-020",
                f"local header flags 0x{flags:04x} differ from central "
                f"directory 0x{info.flag_bits:04x}",
                member=where,
                offset=off,
            )
        for bit, what in _REFUSED_FLAGS.items():
            if (flags | info.flag_bits) & bit:
                ctx.add(
                    "MLW-SCAN-020",
                    f"member is {what}, which loaders refuse or cannot check",
                    member=where,
                    offset=off,
                )
        if info.compress_type not in _SUPPORTED_METHODS:
            ctx.add(
                "MLW-SCAN-020",
                f"unsupported compression method {info.compress_type}",
                member=where,
                offset=off,
            )
        if not flags & 0x8:
            if crc != info.CRC:
                ctx.add(
                    "MLW-SCAN-020",
                    "local header CRC differs from the central directory",
                    member=where,
                    offset=off,
                )
            if csize != 0xFFFFFFFF and (csize != info.compress_size or usize != info.file_size):
                ctx.add(
                    "MLW-SCAN-020",
                    "local header sizes differ from the central directory",
                    member=where,
                    offset=off,
                )
        data_start = off + 30 + nlen + elen
        data_end = data_start + info.compress_size
        if data_end > size:
            ctx.add(
                "MLW-SCAN-020",
                "member data runs past the end of the file (truncated)",
                member=where,
                offset=off,
            )
            continue
        if flags & 0x8:  # data descriptor after the data, optionally with a signature
            zip64 = info.compress_size >= 0xFFFFFFFF or info.file_size >= 0xFFFFFFFF
            has_sig = bytes(buf[data_end : data_end + 4]) == b"PK\x07\x08"
            data_end += (4 if has_sig else 0) + (20 if zip64 else 12)
        extents.append((off, data_end, where))
    extents.sort()
    cd_start = getattr(zf, "start_dir", None)
    cursor = 0
    for begin, end, where in extents:
        if begin < cursor:
            ctx.add(
                "MLW-SCAN-021",
                "member overlaps the previous one (overlapping entries "
                "are a zip-bomb technique and make readers disagree)",
                member=where,
                offset=begin,
            )
        elif begin > cursor:
            _check_gap(buf, cursor, begin, ctx, member)
        cursor = max(cursor, end)
    if isinstance(cd_start, int) and cd_start > cursor:
        _check_gap(buf, cursor, cd_start, ctx, member)
    return extents


def _check_gap(buf: Any, begin: int, end: int, ctx: ScanContext, member: str | None) -> None:
    gap = buf[begin:end]
    hidden_header = bytes(gap).find(ZIP_MAGIC) >= 0 if end - begin <= (64 << 20) else True
    what = "before the first member" if begin == 0 else "between members"
    ctx.add(
        "MLW-SCAN-022",
        f"{end - begin} bytes {what} are not part of any member"
        + (" and contain a local file header (a hidden member)" if hidden_header else ""),
        member=member,
        offset=begin,
        hidden_bytes=end - begin,
    )
    if starts_pickle(buf, begin, end):
        trace = read_pickle(buf, begin, end, ctx.limits.pickle)
        if trace.imports or trace.calls:
            ctx.add(
                "MLW-SCAN-013",
                "the hidden bytes are a pickle that pickle.load would run (a pickle/zip polyglot)",
                member=member,
                offset=begin,
            )
            judge_trace(trace, ctx, member)


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> tuple[bytes | None, str | None]:
    """Expand a member into memory, checking its CRC; (data, error)."""
    try:
        with zf.open(info) as fh:
            out = bytearray()
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                out += chunk
                if len(out) > limit:
                    return None, f"expands past {limit} bytes"
            return bytes(out), None
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        ValueError,
        struct.error,
    ) as exc:
        return None, str(exc) or type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - lzma/bz2 raise their own errors on bad data
        return None, f"{type(exc).__name__}: {exc}"


def _crc_stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    """Expand a compressed member chunk by chunk so zipfile checks its CRC; error or None."""
    try:
        with zf.open(info) as fh:
            while fh.read(CHUNK):
                pass
    except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, lzma/bz2 their own
        return str(exc) or type(exc).__name__
    return None


def _scan_member(
    buf: Any,
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    kind: str,
    ctx: ScanContext,
    prefix: str,
    on_nested: Callable[[Any, ScanContext, str], None] | None,
    loader_reads: set[str],
) -> None:
    name = prefix + info.filename
    if info.is_dir():
        return
    limits = ctx.limits
    base = info.filename.rsplit("/", 1)[-1]
    rel = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
    if kind == "torch-export-pt2" and (
        rel.startswith("data/aotinductor/") or base.endswith((".so", ".dll", ".dylib"))
    ):
        ctx.add(
            "MLW-SCAN-052",
            "member is a native library or AOTInductor code that "
            "torch.export/AOTInductor loaders run",
            member=name,
        )
    if (
        kind == "torch-export-pt2"
        and rel.startswith("data/constants/")
        and base.startswith(("custom_obj_", "opaque_obj_"))
    ):
        ctx.add(
            "MLW-SCAN-052",
            "opaque object (custom_obj/opaque_obj constant) that torch.export.load "
            "unpickles without restrictions",
            member=name,
        )
    raw = _raw_data(kind, info.filename)
    stored = info.compress_type == zipfile.ZIP_STORED
    data: Any
    if stored:
        if info.header_offset < 0 or info.header_offset + 30 > len(buf):
            return  # reported by the layout check
        nlen, elen = struct.unpack_from("<2H", buf, info.header_offset + 26)
        start = info.header_offset + 30 + nlen + elen
        data = memoryview(buf)[start : start + info.compress_size]
        if len(data) != info.compress_size:
            return  # truncation already reported by the layout check
        if info.compress_size != info.file_size:
            ctx.add("MLW-SCAN-020", "stored member's sizes differ", member=name)
            return
        # Raw tensor bytes are never parsed by a loader; their CRC is checked in deep
        # mode only, so a multi-GB checkpoint is not read end to end by default.
        if (not raw or limits.verify_data_crc or info.file_size <= _SMALL_MEMBER) and zlib.crc32(
            data
        ) != info.CRC:
            ctx.add(
                "MLW-SCAN-020",
                "CRC-32 of the member data does not match (corrupt or tampered)",
                member=name,
            )
    else:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.max_member_bytes or (
            info.file_size > (16 << 20) and ratio > limits.max_compression_ratio
        ):
            ctx.add(
                "MLW-SCAN-021",
                f"member expands to {info.file_size} bytes from "
                f"{info.compress_size} (ratio {ratio:.0f}); not expanded",
                member=name,
                expanded=info.file_size,
                compressed=info.compress_size,
            )
            return
        if raw and not _peek(zf, info):
            if limits.verify_data_crc or info.file_size <= _SMALL_MEMBER:
                err = _crc_stream(zf, info)
                if err:
                    ctx.add("MLW-SCAN-020", f"member cannot be expanded: {err}", member=name)
            return
        data, err = _read_member(zf, info, limits.max_member_bytes)
        if data is None:
            ctx.add("MLW-SCAN-020", f"member cannot be expanded: {err}", member=name)
            return
    head = bytes(data[:8])
    if head.startswith(_NATIVE_MAGICS) or _is_pe(data):
        ctx.add(
            "MLW-SCAN-054",
            "member is a native executable or shared library (judged by its bytes): "
            "loaders that load compiled code (AOTInductor, custom ops) run it",
            member=name,
        )
        return
    if ctx.torchscript and "/code/" in info.filename and base.endswith(".py"):
        check_torchscript_code(bytes(data), ctx, name)
    if info.filename in loader_reads or base.lower().endswith((".pkl", ".pickle")):
        scan_pickle_stream(data, ctx, member=name)  # the pickle the loader unpickles
    elif raw:
        # tensor bytes: a loader copies them, never parses them, but a pickle hidden
        # here is reported (the file carries code the loader does not need)
        if head[:1] and head[0] in OPCODES:
            trace = read_pickle(data, 0, len(data), limits.pickle)
            # random tensor bytes often parse as a few opcodes (EXT1, LONG1...); only a
            # real import that is then called, or a whole pickle, is a hidden payload
            real = [g for g in trace.imports if importable(g.module, g.name)]
            if real and (trace.calls or trace.complete):
                ctx.add(
                    "MLW-SCAN-013",
                    "a tensor-data member holds a pickle that imports or calls",
                    member=name,
                )
                judge_trace(trace, ctx, name)
    elif on_nested is not None:
        # every other member is identified by its content, exactly like a file
        if head.startswith((ZIP_MAGIC, b"PK\x05\x06")) and ctx.depth >= limits.max_nesting:
            ctx.add("MLW-SCAN-021", "archives nested too deeply; not expanded", member=name)
            return
        ctx.depth += 1
        try:
            on_nested(bytes(data) if len(data) <= (256 << 20) else data, ctx, name)
        finally:
            ctx.depth -= 1
    elif kind == "keras" and base == "config.json":
        from mlwarden.supplychain.keras_scan import scan_keras_config

        scan_keras_config(bytes(data), ctx, name)


# TorchScript code can call any registered operator; these reach files, processes or
# native libraries (torch.ops.load_library, from_file, save, custom op namespaces)
_TS_RISKY = re.compile(
    rb"torch\.ops\.(?!aten\.|prim\.|quantized\.|_caffe2\.)[A-Za-z_]\w*\.|"
    rb"\bload_library\b|\bfrom_file\b|\btorch\.save\b|\btorch\.load\b|"
    rb"\b_load_for_mobile\b|\bopen\(|__import__|\bsubprocess\b|\bos\.system\b"
)


def check_torchscript_code(code: bytes, ctx: ScanContext, member: str) -> None:
    """Operators in a TorchScript code member that reach beyond tensor math."""
    hits = sorted({m.group(0).decode("utf-8", "replace") for m in _TS_RISKY.finditer(code)})
    if hits:
        ctx.add(
            "MLW-SCAN-055",
            f"TorchScript code calls {', '.join(hits[:5])}: torch.jit.load runs it",
            member=member,
            calls=hits[:20],
        )


_NATIVE_MAGICS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _is_pe(data: Any) -> bool:
    """A Windows PE image: ``MZ`` and a ``PE\\0\\0`` header where e_lfanew points."""
    if len(data) < 64 or bytes(data[:2]) != b"MZ":
        return False
    off = struct.unpack_from("<I", data, 60)[0]
    return off + 4 <= len(data) and bytes(data[off : off + 4]) == b"PE\x00\x00"


def _raw_data(kind: str, filename: str) -> bool:
    """Members a loader copies as raw bytes and never parses: torch storages
    (``<prefix>/data/<key>``, read by ``persistent_load`` in torch.serialization._load)
    and torch.export weights/constants (``<prefix>/data/weights|constants/<name>``)."""
    parts = filename.split("/")
    if kind in ("pytorch-zip", "torchscript"):
        return len(parts) == 3 and parts[1] == "data"
    if kind == "torch-export-pt2":
        return (
            len(parts) >= 4
            and parts[1] == "data"
            and parts[2] in ("weights", "constants")
            and not parts[-1].endswith(".json")
        )
    return False


_SMALL_MEMBER = 1 << 20


def _peek(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a compressed raw-data member's first bytes call for reading all of it
    (a pickle opcode or another container's magic)."""
    try:
        with zf.open(info) as fh:
            head = fh.read(8)
    except Exception:  # noqa: BLE001 - reported when the member is expanded
        return True
    return head.startswith((NPY_MAGIC, ZIP_MAGIC, *_NATIVE_MAGICS, b"MZ")) or (
        bool(head) and head[0] in OPCODES
    )
