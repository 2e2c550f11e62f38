"""`scan_file` and `scan_path`: find each file's format by its bytes and check it.

Formats are recognised by magic bytes, never by the file name alone (a PyTorch zip
named ``model.bin`` is still a zip); names only break ties between formats that have
no magic (ONNX). Files are memory-mapped, so tensor data that is skipped is never
read. Nothing here imports torch.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import mmap
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlwarden.core.errors import InputError, ModelLoadError, UnsafeArtefactError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.supplychain.context import ScanContext, ScanLimits
from mlwarden.supplychain.keras_scan import HDF5_MAGIC, scan_hdf5
from mlwarden.supplychain.numpy_scan import NPY_MAGIC, scan_npy
from mlwarden.supplychain.onnx_scan import scan_onnx
from mlwarden.supplychain.pickle_reader import read_pickle
from mlwarden.supplychain.pickle_scan import judge_trace, scan_pickle_stream, starts_pickle
from mlwarden.supplychain.policy import Policy
from mlwarden.supplychain.results import FileScan, ScanResult, Verdict, verdict_of
from mlwarden.supplychain.safetensors_scan import looks_like_safetensors, scan_safetensors
from mlwarden.supplychain.torch_legacy import LEGACY_MAGIC, scan_legacy_sequential, scan_legacy_tar
from mlwarden.supplychain.zip_scan import ZIP_MAGIC, _BufferFile, scan_zip

__all__ = ["ensure_scanned", "scan_file", "scan_path", "iter_files", "sha256_file"]

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".sav", ".dat")
_TEXT_SUFFIXES = (
    ".json",
    ".txt",
    ".md",
    ".yaml",
    ".yml",
    ".toml",
    ".cfg",
    ".ini",
    ".py",
    ".gitattributes",
    ".model",
    ".csv",
    ".tsv",
    ".html",
    ".xml",
    ".lock",
)
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
    """Detect the format of ``buf`` and run its scanner; return the format name."""
    size = len(buf)
    if size == 0:
        return "empty"
    head = bytes(buf[:512])
    lower = name.lower()

    def nested(data: Any, c: ScanContext, inner: str) -> None:
        scan_buffer(data, c, name=inner.rsplit("/", 1)[-1], base=None, member=inner)

    if head.startswith(ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
        return scan_zip(buf, ctx, member=member, on_nested=nested)
    if head.startswith(NPY_MAGIC):
        scan_npy(buf, ctx, member)
        return "numpy"
    if head.startswith(HDF5_MAGIC):
        return "keras-h5" if scan_hdf5(buf, ctx) else "hdf5"
    if (
        starts_pickle(head, 0, len(head))
        and head[0] == 0x80
        or (head[:1] in (b"(", b"]", b"}", b"c", b")") and lower.endswith(_PICKLE_SUFFIXES))
    ):
        return _scan_raw_pickle(buf, ctx, member)
    if looks_like_safetensors(head, size) or lower.endswith(".safetensors"):
        scan_safetensors(buf, ctx, member)
        return "safetensors"
    if _has_eocd(buf) and _opens_as_zip(buf):  # data prepended to a zip: a polyglot
        return scan_zip(buf, ctx, member=member, on_nested=nested)
    if (
        head[:2] == b"\x1f\x8b"
        or head[:3] == b"BZh"
        or head[:6] == b"\xfd7zXZ\x00"
        or (
            head[:1] == b"\x78"
            and head[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda")
            and lower.endswith(_PICKLE_SUFFIXES)
        )
    ):
        return _scan_compressed(buf, head, ctx, name, member)
    if size > 262 and head[257:262] == b"ustar":
        return scan_legacy_tar(buf, ctx, _BufferFile(buf))
    if lower.endswith(".onnx"):
        scan_onnx(buf, ctx, base, member)
        return "onnx"
    if head[:1] == b"\x08" and head[1:2] < b"\x20" and not _is_text(head):
        # an ONNX model under another name (field 1, ir_version, comes first); only
        # claim it when it parses, otherwise it is an unknown binary
        probe = ScanContext(label=ctx.label, policy=ctx.policy, limits=ctx.limits)
        scan_onnx(buf, probe, base, member)
        if not any(f.id == "MLW-SCAN-042" for f in probe.findings):
            ctx.findings.extend(probe.findings)
            ctx.members += probe.members
            return "onnx"
    if head[:1] in (b"(", b"]", b"}", b"c", b")", b"i"):
        trace = read_pickle(buf, 0, size, ctx.limits.pickle)
        if trace.complete and (trace.imports or trace.calls):
            judge_trace(trace, ctx, member)
            return "pickle"
    if _is_text(head):
        return "json" if lower.endswith(".json") else "text"
    return _scan_unknown(buf, ctx, member)


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        return exc.start >= len(head) - 3


def _has_eocd(buf: Any) -> bool:
    size = len(buf)
    return buf.rfind(b"PK\x05\x06", max(0, size - 65_557)) >= 0 if size >= 22 else False


def _opens_as_zip(buf: Any) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(_BufferFile(buf)) as zf:
            return len(zf.infolist()) > 0
    except Exception:  # noqa: BLE001 - anything zipfile refuses is simply not a zip
        return False


def _scan_raw_pickle(buf: Any, ctx: ScanContext, member: str | None) -> str:
    first = read_pickle(buf, 0, len(buf), ctx.limits.pickle)
    judge_trace(first, ctx, member)
    if not first.complete:
        return "pickle"
    if first.result == LEGACY_MAGIC:
        scan_legacy_sequential(buf, ctx, first, member)
        return "pytorch-legacy"
    joblib = any(g.module.startswith("joblib") for g in first.imports)
    if first.end < len(buf):
        scan_pickle_stream(buf, ctx, start=first.end, member=member) if starts_pickle(
            buf, first.end, len(buf)
        ) else ctx.add(
            "MLW-SCAN-010",
            f"{len(buf) - first.end} bytes after the pickle are not a pickle",
            member=member,
            offset=first.end,
        )
    return "joblib" if joblib else "pickle"


def _scan_compressed(buf: Any, head: bytes, ctx: ScanContext, name: str, member: str | None) -> str:
    """gzip/bz2/xz/zlib streams (compressed joblib and pickle files): expand with a cap."""
    limit = ctx.limits.max_member_bytes
    if head[:2] == b"\x1f\x8b":
        kind, dec = "gzip", zlib.decompressobj(wbits=31)
    elif head[:3] == b"BZh":
        kind, dec = "bz2", bz2.BZ2Decompressor()
    elif head[:6] == b"\xfd7zXZ\x00":
        kind, dec = "xz", lzma.LZMADecompressor()
    else:
        kind, dec = "zlib", zlib.decompressobj()
    out = bytearray()
    view = memoryview(buf)
    try:
        for i in range(0, len(view), 1 << 20):
            chunk = view[i : i + (1 << 20)]
            while chunk:
                piece = dec.decompress(chunk, max(1, limit + 1 - len(out)))
                out += piece
                if len(out) > limit:
                    ctx.add(
                        "MLW-SCAN-062",
                        f"{kind} stream expands past {limit} bytes; not expanded further",
                        member=member,
                    )
                    return kind
                chunk = getattr(dec, "unconsumed_tail", b"")
                if not piece and not chunk:
                    break
            if getattr(dec, "eof", False):
                break
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        ctx.add("MLW-SCAN-060", f"{kind} stream is corrupt: {exc}", member=member)
        return kind
    if not getattr(dec, "eof", True):
        ctx.add("MLW-SCAN-060", f"{kind} stream is truncated", member=member)
    if ctx.depth >= ctx.limits.max_nesting:
        ctx.add("MLW-SCAN-062", "compressed streams nested too deeply", member=member)
        return kind
    ctx.depth += 1
    try:
        inner_name = (
            name.rsplit(".", 1)[0] if name.lower().endswith((".gz", ".bz2", ".xz", ".z")) else name
        )
        inner = scan_buffer(
            bytes(out), ctx, name=inner_name, base=None, member=(member or "") + f"<{kind}>"
        )
    finally:
        ctx.depth -= 1
    return f"{kind}+{inner}"


def _scan_unknown(buf: Any, ctx: ScanContext, member: str | None) -> str:
    """An unrecognised binary: look for embedded pickles before calling it harmless."""
    size = len(buf)
    probes = 0
    for proto in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        pos = buf.find(proto)
        while pos >= 0 and probes < _MAX_PROBES:
            probes += 1
            trace = read_pickle(buf, pos, size, ctx.limits.pickle)
            if trace.end > 0 and (trace.imports or trace.calls):
                ctx.add(
                    "MLW-SCAN-012",
                    "an unrecognised file holds a pickle that a loader could run",
                    member=member,
                    offset=pos,
                )
                judge_trace(trace, ctx, member)
                return "unknown"
            pos = buf.find(proto, pos + 1)
    ctx.add("MLW-SCAN-061", "format not recognised; no embedded pickle found", member=member)
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
