"""`scan_file` and `scan_path`: find each file's format by its bytes and check it.

Formats are recognised by content, never by the file name (a PyTorch zip named
``model.bin`` is still a zip, a pickle named ``.npy`` still a pickle); a name only
decides whether a ``.onnx`` file must parse as ONNX. The scan fails closed: content no
scanner identified and parsed is ``unreadable``, never ``safe``. Files are
memory-mapped, so tensor data that is skipped is never read. Nothing here imports torch.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import mmap
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputError, ModelLoadError, UnsafeArtefactError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.supplychain.context import ScanContext, ScanLimits
from mlwarden.supplychain.magic import (
    CHUNK,
    ENCRYPTED_MAGIC,
    GGUF_MAGIC,
    HDF5_MAGIC,
    LEGACY_MAGIC,
    NPY_MAGIC,
    ZIP_MAGIC,
    looks_like_safetensors,
)
from mlwarden.supplychain.pickle_reader import OPCODES, looks_like_pickle, read_pickle
from mlwarden.supplychain.pickle_scan import (
    first_unimportable,
    judge_trace,
    scan_pickle_stream,
    starts_pickle,
)
from mlwarden.supplychain.policy import Policy
from mlwarden.supplychain.results import FileScan, ScanResult, Verdict, verdict_of

# The format parsers are imported where a file of their format is dispatched, not here:
# a scan of one pickle should not pay for the zip, ONNX, Keras or GGUF modules.

__all__ = ["ensure_scanned", "scan_file", "scan_path", "iter_files", "sha256_file"]

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
_MAX_PROBES = 64


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks (a multi-GB checkpoint never sits in memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open_map(path: Path) -> tuple[Any, Any]:
    fh = open(path, "rb")
    try:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return fh, b""
        return fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        fh.close()
        raise


def scan_file(
    path: str | Path,
    *,
    allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
    digest: bool = True,
    label: str | None = None,
    policy: Policy | None = None,
) -> FileScan:
    """Scan one file and return its format, verdict and findings (never raises on content).

    ``allow`` names reviewed imports (``"module.name"``, ``"module.*"``) that count as
    safe. ``digest=False`` skips the SHA-256 (the load gate does not need it).
    """
    file = Path(path)
    label = label or str(file)
    ctx = ScanContext(label=label, policy=policy or Policy(allow), limits=limits or ScanLimits())
    try:
        size = file.stat().st_size
        fh, buf = _open_map(file)
    except OSError as exc:
        ctx.add("MLW-SCAN-060", f"cannot read the file: {exc.strerror or exc}")
        return FileScan(label, "unreadable", verdict_of(ctx.findings), None, 0, ctx.findings)
    try:
        try:
            fmt = scan_buffer(buf, ctx, name=file.name, base=file.parent)
        except MemoryError:
            ctx.add("MLW-SCAN-060", "ran out of memory while scanning")
            fmt = "unknown"
        except Exception as exc:  # noqa: BLE001 - a parser defect must fail closed, not crash
            ctx.add(
                "MLW-SCAN-060",
                f"the scanner could not parse the file "
                f"({type(exc).__name__}: {str(exc)[:120]}); treat it as unsafe",
            )
            fmt = "unknown"
        digest_hex = sha256_file(file) if digest else None
    finally:
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:  # a view is still referenced; the mapping closes with it
                pass
        fh.close()
    ctx.finish()
    return FileScan(
        label, fmt, verdict_of(ctx.findings), digest_hex, size, ctx.findings, ctx.members
    )


def scan_buffer(
    buf: Any, ctx: ScanContext, *, name: str, base: Path | None, member: str | None = None
) -> str:
    """Detect the format of ``buf`` by its content and run its scanner; return the format.

    Fails closed: content that no scanner positively identifies and fully parses ends
    as ``unknown`` with an MLW-SCAN-061 (unreadable) finding, never as ``safe``.
    """
    if len(buf) == 0:
        return "empty"
    head = bytes(buf[:512])
    fmt = _dispatch(buf, head, ctx, name, base, member)
    if not fmt.endswith(_ZIP_KINDS) and _has_eocd(buf) and _opens_as_zip(buf):
        # zipfile (numpy, Keras, safetensors-unaware tools) finds an archive by its end
        # record, wherever the file starts: a polyglot shows each loader another file
        ctx.add(
            "MLW-SCAN-024",
            f"the file is {fmt} but also ends in a zip archive that zipfile-based loaders "
            "(Keras, numpy.load of .npz) open; its members were scanned too",
            member=member,
        )
        _nested(buf, ctx, (member or "") + "<zip>", lambda b, c: _scan_zip(b, c, member))
    return fmt


_ZIP_KINDS = ("zip", "pytorch-zip", "torchscript", "keras", "npz", "torch-export-pt2")


def _scan_zip(buf: Any, ctx: ScanContext, member: str | None) -> str:
    from mlwarden.supplychain.zip_scan import scan_zip

    return scan_zip(buf, ctx, member=member, on_nested=_nested_member)


def _nested_member(data: Any, c: ScanContext, inner: str) -> None:
    scan_buffer(data, c, name=inner.rsplit("/", 1)[-1], base=None, member=inner)


def _nested(buf: Any, ctx: ScanContext, where: str, scan: Any) -> str | None:
    """Run ``scan`` one container level deeper, refusing past ``max_nesting``."""
    if ctx.depth >= ctx.limits.max_nesting:
        ctx.add("MLW-SCAN-062", "containers nested too deeply; not expanded", member=where)
        return None
    ctx.depth += 1
    try:
        return scan(buf, ctx)
    finally:
        ctx.depth -= 1


def _dispatch(
    buf: Any, head: bytes, ctx: ScanContext, name: str, base: Path | None, member: str | None
) -> str:
    size = len(buf)
    if head.startswith(ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
        return _scan_zip(buf, ctx, member)
    if head.startswith(NPY_MAGIC):
        from mlwarden.supplychain.numpy_scan import scan_npy

        scan_npy(buf, ctx, member)
        return "numpy"
    if any(head.startswith(HDF5_MAGIC) for head in (head, *_hdf5_heads(buf))):
        from mlwarden.supplychain.keras_scan import scan_hdf5

        return "keras-h5" if scan_hdf5(buf, ctx) else "hdf5"
    if head.startswith(GGUF_MAGIC):
        from mlwarden.supplychain.gguf_scan import scan_gguf

        scan_gguf(buf, ctx, member)
        return "gguf"
    compressed = _compression(head)
    if compressed is not None:
        fmt = _scan_compressed(buf, compressed, ctx, name, member)
        if fmt is not None:
            return fmt
    if size >= 512 and _is_tar_header(head):
        from mlwarden.supplychain.torch_legacy import scan_legacy_tar
        from mlwarden.supplychain.zip_scan import _BufferFile

        return scan_legacy_tar(buf, ctx, _BufferFile(buf), on_nested=_nested_member)
    if looks_like_safetensors(head, size):
        from mlwarden.supplychain.safetensors_scan import check_hidden_payloads, scan_safetensors

        check_hidden_payloads(buf, scan_safetensors(buf, ctx, member), ctx, member)
        return "safetensors"
    if head[0] in OPCODES:  # a pickle at any protocol, whatever its first opcode
        fmt = _try_pickle(buf, ctx, member)
        if fmt is not None:
            return fmt
    if name.lower().endswith(".onnx"):
        from mlwarden.supplychain.onnx_scan import scan_onnx

        scan_onnx(buf, ctx, base, member)
        return "onnx"
    if head[:1] == b"\x08" and head[1:2] < b"\x20":
        # an ONNX model under another name (field 1, ir_version, comes first); only
        # claim it when it parses, otherwise it is an unknown binary
        from mlwarden.supplychain.onnx_scan import scan_onnx

        probe = ScanContext(label=ctx.label, policy=ctx.policy, limits=ctx.limits)
        scan_onnx(buf, probe, base, member)
        if not any(f.id == "MLW-SCAN-042" for f in probe.findings):
            ctx.findings.extend(probe.findings)
            ctx.members += probe.members
            return "onnx"
    from mlwarden.supplychain.sentencepiece_scan import is_sentencepiece

    if head[:1] == b"\x0a" and is_sentencepiece(buf):
        ctx.members += 1
        return "sentencepiece"
    text = scan_text(buf, ctx, name, member)
    if text is not None:
        return text
    return _scan_unknown(buf, ctx, member)


def _has_eocd(buf: Any) -> bool:
    """A zip end-of-central-directory record in the last 64 KiB (where zipfile looks)."""
    size = len(buf)
    if size < 22:
        return False
    tail = bytes(buf[max(0, size - 65_557) :])
    return tail.rfind(b"PK\x05\x06") >= 0


def _opens_as_zip(buf: Any) -> bool:
    import zipfile

    from mlwarden.supplychain.zip_scan import _BufferFile

    try:
        with zipfile.ZipFile(_BufferFile(buf)) as zf:
            return len(zf.infolist()) > 0
    except Exception:  # noqa: BLE001 - anything zipfile refuses is simply not a zip
        return False


def _hdf5_heads(buf: Any) -> list[bytes]:
    """HDF5 looks for its superblock at 0, 512, 1024, 2048... (a user block before it)."""
    return [bytes(buf[o : o + 8]) for o in (512, 1024, 2048, 4096) if len(buf) > o + 8]


def _is_tar_header(head: bytes) -> bool:
    """Whether tarfile accepts the first header: mirrors ``tarfile.TarInfo.frombuf``
    (checksum, any of the v7, ustar, GNU and pax variants), which ``tarfile.open(mode='r:')``
    and so ``torch.serialization._legacy_load`` use."""
    import tarfile

    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError, UnicodeError):
        return False
    return True


def _try_pickle(buf: Any, ctx: ScanContext, member: str | None) -> str | None:
    """Read ``buf`` as pickle.load would; None when it is plainly not a pickle.

    Anything that imports or calls is judged (pickle.load runs it opcode by opcode, so
    even a pickle that later breaks has already run). A pickle of plain values that
    stops before the end of a UTF-8 text (``N.`` opening a README) is left to the text
    check; otherwise the file is a pickle and its tail is judged as a defect.
    """
    size = len(buf)
    first = read_pickle(buf, 0, size, ctx.limits.pickle)
    stop = first_unimportable(first)
    if stop is not None and not first.complete and _is_text_stream(buf):
        # text that opens like a GLOBAL ("class X(Module):" in TorchScript code):
        # pickle.load would fail importing that name, so only what comes before counts
        early = [x.offset for x in (*first.imports, *first.calls) if x.offset < stop]
        early += [o for _c, o in first.extensions if o < stop]
        early += [o for o in first.dynamic_imports if o < stop]
        if not early:
            return None
    acts = bool(first.imports or first.calls or first.extensions or first.dynamic_imports)
    if not acts:
        if not first.complete and (first.limit is None and not looks_like_pickle(_head8(buf))):
            return None  # not a pickle (or one pickle.load rejects before doing anything)
        if not first.complete and _is_text_stream(buf):
            return None
        if first.end < size and _is_text_stream(buf):
            return None
    return _scan_raw_pickle(buf, ctx, member, first)


def _head8(buf: Any) -> bytes:
    return bytes(buf[:8])


def _scan_raw_pickle(buf: Any, ctx: ScanContext, member: str | None, first: Any) -> str:
    judge_trace(first, ctx, member)
    if not first.complete:
        return "pickle"
    if first.result == LEGACY_MAGIC:
        from mlwarden.supplychain.torch_legacy import scan_legacy_sequential

        scan_legacy_sequential(buf, ctx, first, member)
        return "pytorch-legacy"
    joblib = any(g.module.startswith("joblib") for g in first.imports)
    if first.end < len(buf):
        # pickle.load stops at STOP; a loader that calls it again (torch's legacy
        # format, joblib's nested arrays, user code) reads what follows
        if starts_pickle(buf, first.end, len(buf)):
            scan_pickle_stream(buf, ctx, start=first.end, member=member)
        else:
            ctx.add(
                "MLW-SCAN-010",
                f"{len(buf) - first.end} bytes after the pickle's STOP are not a pickle "
                "(the scanner and a loader could read different data)",
                member=member,
                offset=first.end,
            )
            _scan_embedded(buf, ctx, member, start=first.end)
    return "joblib" if joblib else "pickle"


def _is_text_stream(buf: Any) -> bool:
    """The whole buffer decodes as UTF-8 without NUL bytes (read in bounded chunks)."""
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(buf)
    try:
        for i in range(0, len(view), CHUNK):
            chunk = bytes(view[i : i + CHUNK])
            if b"\x00" in chunk:
                return False
            dec.decode(chunk)
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def scan_text(buf: Any, ctx: ScanContext, name: str, member: str | None) -> str | None:
    """A data file (config, tokenizer, vocabulary, README): ``json`` when it parses as
    JSON, ``text`` when all of it is UTF-8; None otherwise. Recognised by parsing, never
    by the name. JSON configs are also walked for Keras layers and chat templates."""
    if not _is_text_stream(buf):
        return None
    if len(buf) > ctx.limits.max_json_bytes:
        return "text"
    raw = bytes(buf)
    stripped = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"{", b"["):
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            return "text"
        check_json_document(doc, ctx, member)
        return "json"
    if name.lower().endswith(".jinja"):
        from mlwarden.supplychain.template_scan import check_template

        check_template(raw.decode("utf-8-sig"), ctx, member, "template")
    return "text"


def check_json_document(doc: Any, ctx: ScanContext, member: str | None) -> None:
    """Keras model configs and chat templates inside a JSON data file."""
    from mlwarden.supplychain.keras_scan import is_keras_config, walk_keras_config
    from mlwarden.supplychain.template_scan import check_template

    if isinstance(doc, dict):
        if "chat_template" in doc:
            check_template(doc["chat_template"], ctx, member, "chat_template")
        if is_keras_config(doc):
            walk_keras_config(doc, ctx, member)


def _compression(head: bytes) -> str | None:
    """The compressor joblib's ``_detect_compressor`` would pick for these first bytes
    (joblib/compressor.py prefixes), plus zlib header validation (RFC 1950)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:2] == b"\x5d\x00":
        return "lzma"
    if head[:2] == b"ZF":
        return "zfile"
    if head[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and ((head[0] << 8 | head[1]) % 31 == 0)
    ):
        return "zlib"
    return None


def _scan_compressed(
    buf: Any, kind: str, ctx: ScanContext, name: str, member: str | None
) -> str | None:
    """Expand a compressed stream in bounded chunks and scan what it holds.

    None when a weak magic (zlib, lzma, joblib's old ZF header) turns out not to start
    a stream, so the bytes are tried as other formats; a strong magic that does not
    decompress is unreadable.
    """
    weak = kind in ("zlib", "lzma", "zfile")
    where = (member or "") + f"<{kind}>"
    start = 0
    if kind == "lz4":
        ctx.add("MLW-SCAN-061", "lz4 stream: not expanded (no lz4 decoder)", member=member)
        return "lz4"
    if kind == "zfile":  # joblib < 0.9.3: b"ZF" + hex length padded to 19 bytes + zlib
        start = 2 + 19
    out = bytearray()
    state, end = _expand(buf, start, _decompressor(kind), ctx.limits, out)
    if state == "corrupt" and weak and len(out) == 0:
        return None
    # gzip.GzipFile, bz2.BZ2File and lzma.LZMAFile (joblib's readers) go on reading a
    # stream that follows the first one, so concatenated streams are expanded together
    while (
        state == "trailing" and kind != "zlib" and _compression(bytes(buf[end : end + 8])) == kind
    ):
        state, end = _expand(buf, end, _decompressor(kind), ctx.limits, out)
    if state == "bomb":
        ctx.add(
            "MLW-SCAN-062",
            f"{kind} stream expands past the limit ({len(out)} bytes from at most "
            f"{len(buf)}); not expanded further",
            member=member,
        )
        return kind
    if state == "corrupt":
        ctx.add("MLW-SCAN-060", f"{kind} stream is corrupt", member=member)
        return kind
    if state == "truncated":
        ctx.add("MLW-SCAN-060", f"{kind} stream is truncated", member=member)
    elif state == "trailing":
        ctx.add(
            "MLW-SCAN-024",
            f"{len(buf) - end} bytes after the end of the {kind} stream are not part of it "
            "(readers disagree whether they belong to the file)",
            member=member,
            offset=end,
        )
        _scan_embedded(buf, ctx, member, start=end)
    low = name.lower()
    inner_name = low.rsplit(".", 1)[0] if low.endswith((".gz", ".bz2", ".xz", ".z")) else low
    inner = _nested(
        bytes(out),
        ctx,
        where,
        lambda b, c: scan_buffer(b, c, name=inner_name, base=None, member=where),
    )
    return f"{kind}+{inner}" if inner else kind


def _decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(wbits=31)
    if kind == "bz2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    return zlib.decompressobj()


def _expand(buf: Any, start: int, dec: Any, limits: ScanLimits, out: bytearray) -> tuple[str, int]:
    """Decompress chunk by chunk, never producing more than the limit allows.

    A stream is a bomb past ``max_member_bytes``, or past 16 MiB at a ratio above
    ``max_compression_ratio``. Appends to ``out``; returns ("ok" | "bomb" | "corrupt" |
    "truncated" | "trailing", offset where the stream ended).
    """
    view = memoryview(buf)
    consumed = len(out) // max(1, int(limits.max_compression_ratio))
    end = len(view)
    zlib_like = hasattr(dec, "unconsumed_tail")
    try:
        for i in range(start, len(view), CHUNK):
            data: Any = view[i : i + CHUNK]
            consumed += len(data)
            while True:
                allowed = max(16 << 20, int(consumed * limits.max_compression_ratio))
                room = min(limits.max_member_bytes, allowed) + 1 - len(out)
                if room <= 0:
                    return "bomb", end
                out += dec.decompress(data, room)
                if dec.eof:
                    break
                if zlib_like:
                    data = dec.unconsumed_tail
                    if not data:
                        break
                else:
                    data = b""
                    if dec.needs_input:
                        break
            if dec.eof:
                end = i + len(view[i : i + CHUNK]) - len(dec.unused_data)
                break
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return "corrupt", end
    if not dec.eof:
        return "truncated", end
    return ("trailing" if end < len(view) else "ok"), end


_PROTO_MARK = re.compile(rb"\x80[\x02-\x05]")


def _scan_embedded(buf: Any, ctx: ScanContext, member: str | None, start: int = 0) -> bool:
    """Look for pickles at PROTO markers; True (with findings) when one imports or calls.

    Searched in place with ``re`` (an mmap or a memoryview is never copied)."""
    size = len(buf)
    for probes, m in enumerate(_PROTO_MARK.finditer(buf, start)):
        if probes >= _MAX_PROBES:
            break
        pos = m.start()
        trace = read_pickle(buf, pos, size, ctx.limits.pickle)
        if trace.end > 0 and (trace.imports or trace.calls):
            ctx.add(
                "MLW-SCAN-012",
                "the file holds a pickle that a loader could run",
                member=member,
                offset=pos,
            )
            judge_trace(trace, ctx, member)
            return True
    return False


def _scan_unknown(buf: Any, ctx: ScanContext, member: str | None) -> str:
    """An unrecognised binary fails closed: unreadable, and unsafe if a pickle is inside."""
    if bytes(buf[: len(ENCRYPTED_MAGIC)]) == ENCRYPTED_MAGIC:
        ctx.add(
            "MLW-SCAN-061",
            "encrypted by `mlwarden encrypt`: the content cannot be judged without the key "
            "(`load_model` with the key scans the decrypted bytes before loading them)",
            member=member,
        )
        return "mlwarden-encrypted"
    if not _scan_embedded(buf, ctx, member):
        head = bytes(buf[:8]).hex(" ")
        ctx.add(
            "MLW-SCAN-061",
            f"format not recognised (first bytes {head}): no scanner parsed it, so it is "
            "not known to be safe",
            member=member,
        )
    return "unknown"


def iter_files(root: Path) -> Iterable[Path]:
    """Every regular file under ``root`` (sorted, VCS folders skipped, no symlink loops)."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if p.is_file():
                yield p


def scan_path(
    path: str | Path | Sequence[str | Path],
    *,
    allow: Sequence[str] = (),
    limits: ScanLimits | None = None,
    digest: bool = True,
    progress: ProgressCallback = null_progress,
) -> ScanResult:
    """Scan a file, a folder (recursively, e.g. a Hugging Face model folder) or several."""
    roots = [path] if isinstance(path, (str, Path)) else list(path)
    if not roots:
        raise InputError("no path to scan was given")
    files: list[Path] = []
    for root in roots:
        p = Path(root)
        if not p.exists():
            raise InputError(f"path '{p}' does not exist")
        files.extend(iter_files(p))
    policy = Policy(allow)
    result = ScanResult(roots=[str(r) for r in roots])
    total = len(files)
    progress("scan", 0, total)
    for i, f in enumerate(files, 1):
        result.files.append(scan_file(f, limits=limits, digest=digest, policy=policy))
        progress("scan", i, total)
    return result


def ensure_scanned(
    path: str | Path,
    *,
    allow: Sequence[str] = (),
    fail_on: Verdict = Verdict.SUSPICIOUS,
) -> FileScan:
    """Scan ``path`` for a loader and refuse it at or above ``fail_on`` (the load gate).

    Raises `UnsafeArtefactError` (exit 3) naming the worst findings, or `ModelLoadError`
    when the path is not a readable file. No digest is computed: this runs before every
    model load and must stay cheap.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"model file '{file}' does not exist or is not a regular file")
    scan = scan_file(file, allow=allow, digest=False)
    if scan.verdict.rank >= fail_on.rank:
        worst = sorted(scan.findings, key=lambda f: f.severity.rank, reverse=True)[:3]
        reasons = "; ".join(f"{f.location}: {f.detail}" for f in worst)
        raise UnsafeArtefactError(
            f"refused '{file}' ({scan.format}, verdict {scan.verdict.value}): {reasons}",
            hint="inspect it with 'mlwarden scan'; pass reviewed imports with --allow",
        )
    return scan
