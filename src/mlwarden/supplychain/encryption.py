"""Encryption at rest: AES-256-GCM in authenticated chunks, decrypted only into memory.

A stolen disk or bucket should not give the model away. ``mlwarden encrypt`` writes

    header  b"MLWENC" | version (1) | algorithm (1 = AES-256-GCM) | chunk size (u32)
            | salt (16 random bytes) | suffix length (u8) | the plaintext's suffix
    chunks  AES-256-GCM(chunk) + 16-byte tag, each ``chunk size`` bytes of plaintext
            but the last

The file key is HKDF-SHA256(master key, salt), so no two files share a (key, nonce)
pair; a chunk's nonce is its index (11 bytes) and a last-chunk flag (1 byte), and the
header is every chunk's associated data. So a changed byte, a swapped or dropped chunk,
a cut at a chunk boundary, an appended byte or an edited header all fail authentication
(the chunked construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online
authenticated-encryption and its nonce-reuse misuse-resistance", CRYPTO 2015, as in
Tink's streaming AEAD and age). Encryption streams chunk by chunk; decryption fills an
anonymous memory map (no file behind it) one chunk at a time, so a model is in memory
once, never twice, and never on disk in the clear.

The 32-byte master key comes from a key file or an environment variable, never from
the command line (it would show in ``ps`` and in shell history): the raw 32 bytes, or
their base64 or hex text.
"""

from __future__ import annotations

import base64
import binascii
import io
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from mlwarden.core.errors import DependencyError, InputError, UnsafeArtefactError, first_line
from mlwarden.supplychain.magic import ENCRYPTED_MAGIC

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "InMemoryFile",
    "decrypt_file",
    "decrypt_to_memory",
    "encrypt_file",
    "encrypt_folder",
    "generate_key",
    "is_encrypted",
    "read_key",
]

MAGIC = ENCRYPTED_MAGIC
VERSION = 1
ALG_AES_256_GCM = 1
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per chunk
TAG = 16
KEY_BYTES = 32
KEY_ENV = "MLWARDEN_MODEL_KEY"
"""Environment variable holding the master key (base64 or hex)."""
KEY_FILE_ENV = "MLWARDEN_MODEL_KEY_FILE"
"""Environment variable naming the key file `load_model` reads."""
_FIXED = struct.Struct(">6sBBI16sB")
_HKDF_INFO = b"mlwarden encryption at rest v1"


def _aead() -> tuple[type, type, type]:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError as exc:
        raise DependencyError(
            f"encryption needs the 'cryptography' package ({first_line(exc)})",
            hint="pip install 'mlwarden[provenance]'",
        ) from exc
    return AESGCM, HKDF, hashes.SHA256


# -- keys ------------------------------------------------------------------------------------
def generate_key(path: str | Path) -> Path:
    """Write a new random 256-bit key as base64 text, readable by its owner only."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"key file '{path}' already exists; it is not overwritten") from None
    except OSError as exc:
        raise InputError(f"cannot create key file '{path}': {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
    return path


def _parse_key(raw: bytes, where: str) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (base64.b64decode, binascii.unhexlify):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise InputError(
        f"{where} is not a 256-bit key (32 raw bytes, or their base64 or hex text)",
        hint="make one with 'mlwarden encrypt MODEL --key-file KEYFILE --new-key'",
    )


def read_key(key_file: str | Path | None = None, env: str | None = None) -> bytes:
    """The master key from ``key_file``, else from ``$env``, else from ``$MLWARDEN_MODEL_KEY``
    or the file ``$MLWARDEN_MODEL_KEY_FILE`` names."""
    if key_file is None and env is None:
        if os.environ.get(KEY_ENV):
            env = KEY_ENV
        elif os.environ.get(KEY_FILE_ENV):
            key_file = os.environ[KEY_FILE_ENV]
        else:
            raise InputError(
                f"no decryption key: give a key file, or set ${KEY_ENV} or ${KEY_FILE_ENV}"
            )
    if key_file is not None:
        path = Path(key_file)
        try:
            return _parse_key(path.read_bytes(), f"key file '{path}'")
        except FileNotFoundError:
            raise InputError(f"key file '{path}' does not exist") from None
        except IsADirectoryError:
            raise InputError(f"key file '{path}' is a directory") from None
        except OSError as exc:
            raise InputError(f"cannot read key file '{path}': {exc.strerror or exc}") from None
    value = os.environ.get(env or "")
    if not value:
        raise InputError(f"environment variable ${env} is not set or empty")
    return _parse_key(value.encode(), f"${env}")


# -- format ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """The versioned header: authenticated as every chunk's associated data."""

    chunk_size: int
    salt: bytes
    suffix: str
    raw: bytes

    @classmethod
    def new(cls, suffix: str, chunk_size: int = CHUNK_SIZE) -> Header:
        name = suffix.encode("ascii", "replace")[:255]
        raw = _FIXED.pack(MAGIC, VERSION, ALG_AES_256_GCM, chunk_size, os.urandom(16), len(name))
        return cls(chunk_size, raw[12:28], name.decode("ascii"), raw + name)

    @classmethod
    def read(cls, fh: io.BufferedIOBase, where: str) -> Header:
        fixed = fh.read(_FIXED.size)
        if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
            raise InputError(f"'{where}' is not a file encrypted by mlwarden (no MLWENC header)")
        magic, version, alg, chunk_size, salt, n = _FIXED.unpack(fixed)
        if version != VERSION or alg != ALG_AES_256_GCM:
            raise InputError(
                f"'{where}' uses encryption format version {version}, algorithm {alg}; "
                f"this mlwarden reads version {VERSION} (AES-256-GCM)"
            )
        name = fh.read(n)
        if len(name) < n or chunk_size == 0:
            raise UnsafeArtefactError(f"refused '{where}': its encryption header is truncated")
        return cls(chunk_size, salt, name.decode("ascii", "replace"), fixed + name)

    def cipher(self, key: bytes) -> object:
        aesgcm, hkdf, sha256 = _aead()
        file_key = hkdf(algorithm=sha256(), length=KEY_BYTES, salt=self.salt, info=_HKDF_INFO)
        return aesgcm(file_key.derive(key))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def is_encrypted(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts with mlwarden's encryption header."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        with p.open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class _EncryptingWriter(io.RawIOBase):
    """A write-only stream that encrypts what it is given in chunks of ``header.chunk_size``.

    A chunk is sealed only once more data follows it (or at `close`, as the last chunk),
    so the last-chunk flag is right whatever the writes' sizes; `tarfile` writes into it.
    """

    def __init__(self, out: io.BufferedIOBase, header: Header, key: bytes) -> None:
        super().__init__()
        self._out, self._header = out, header
        self._cipher = header.cipher(key)
        self._pending = bytearray()
        self._index = 0
        out.write(header.raw)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._pending += data
        size = self._header.chunk_size
        while len(self._pending) > size:
            self._seal(bytes(self._pending[:size]), last=False)
            del self._pending[:size]
        return len(data)

    def _seal(self, chunk: bytes, last: bool) -> None:
        nonce = _nonce(self._index, last)
        self._out.write(self._cipher.encrypt(nonce, chunk, self._header.raw))  # type: ignore[attr-defined]
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._pending), last=True)
            self._pending.clear()
        super().close()


def _encrypt_into(
    out: Path, source: str, suffix: str, key: bytes, chunk_size: int, fill: object
) -> Path:
    """Write ``out`` atomically: ``fill(writer)`` streams the plaintext into the encryptor."""
    header = Header.new(suffix, chunk_size)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as fout:
            writer = _EncryptingWriter(fout, header, key)  # type: ignore[arg-type]
            fill(writer)  # type: ignore[operator]
            writer.close()
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"cannot encrypt '{source}' to '{out}': {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def encrypt_file(
    source: str | Path, output: str | Path, key: bytes, *, chunk_size: int = CHUNK_SIZE
) -> Path:
    """Encrypt ``source`` into ``output`` one chunk at a time (never the whole file in memory)."""
    import shutil

    src, out = Path(source), Path(output)
    if not src.is_file():
        raise InputError(f"'{src}' is not a file to encrypt")
    if src.resolve() == out.resolve():
        raise InputError("the encrypted output must be a new file, not the input itself")
    if is_encrypted(src):
        raise InputError(f"'{src}' is already encrypted")
    inner = src.name[:-4] if src.name.endswith(".enc") else src.name

    def fill(writer: _EncryptingWriter) -> None:
        with src.open("rb") as fin:
            shutil.copyfileobj(fin, writer, chunk_size)

    return _encrypt_into(out, str(src), Path(inner).suffix, key, chunk_size, fill)


FOLDER_SUFFIX = ".hf-folder.tar"
"""The header's suffix of an encrypted model folder: a tar of its files, uncompressed."""


def encrypt_folder(
    source: str | Path, output: str | Path, key: bytes, *, chunk_size: int = CHUNK_SIZE
) -> Path:
    """Encrypt every file of the model folder ``source`` into the one file ``output``.

    One archive, not a folder of encrypted files, so that the folder is authenticated as a
    whole: a file cannot be dropped, added, renamed or swapped for one from another model
    encrypted under the same key, and the file names and sizes do not show. The tar is
    uncompressed (weights do not compress) and streamed through the encryptor, so no
    plaintext copy is written and the folder is never whole in memory. Links are followed
    (Hugging Face caches link snapshots to blobs); other special files are refused.
    """
    import tarfile

    src, out = Path(source), Path(output)
    if not src.is_dir():
        raise InputError(f"'{src}' is not a folder to encrypt")
    if out.resolve().is_relative_to(src.resolve()):
        raise InputError("write the encrypted folder outside the folder itself")
    files = sorted(p for p in src.rglob("*") if not p.is_dir())
    odd = [str(p.relative_to(src)) for p in files if not p.is_file()]
    if odd:
        raise InputError(f"'{src}' holds entries that are not regular files: {', '.join(odd[:5])}")
    if not files:
        raise InputError(f"'{src}' holds no files")

    def fill(writer: _EncryptingWriter) -> None:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path in files:  # a link's content under the link's name; no owner, no time
                info = tarfile.TarInfo(path.relative_to(src).as_posix())
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as fh:
                    tar.addfile(info, fh)

    return _encrypt_into(out, str(src), FOLDER_SUFFIX, key, chunk_size, fill)


def _chunk_sizes(body: int, chunk_size: int, where: str) -> list[int]:
    """Ciphertext size of each chunk, from the body size; refuses impossible sizes."""
    block = chunk_size + TAG
    full, rest = divmod(body, block)
    if body < TAG or 0 < rest < TAG:
        raise UnsafeArtefactError(
            f"refused '{where}': the encrypted file is truncated (its last chunk is cut)"
        )
    return [block] * full + ([rest] if rest else [])


def _decrypt_chunks(path: Path, key: bytes, sink: object) -> tuple[Header, int]:
    """Decrypt ``path`` chunk by chunk into ``sink(offset, plaintext)``; authenticated."""
    from cryptography.exceptions import InvalidTag

    where = str(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read '{path}': {exc.strerror or exc}") from None
    with fh:
        header = Header.read(fh, where)  # type: ignore[arg-type]
        sizes = _chunk_sizes(
            os.fstat(fh.fileno()).st_size - len(header.raw), header.chunk_size, where
        )
        cipher = header.cipher(key)
        offset = 0
        for index, size in enumerate(sizes):
            data = fh.read(size)
            try:
                plain = cipher.decrypt(_nonce(index, index == len(sizes) - 1), data, header.raw)  # type: ignore[attr-defined]
            except InvalidTag:
                raise UnsafeArtefactError(
                    f"refused '{where}': chunk {index + 1} of {len(sizes)} does not authenticate "
                    "(the file was tampered with or truncated, or the key is wrong)"
                ) from None
            sink(offset, plain)  # type: ignore[operator]
            offset += len(plain)
    return header, offset


def read_header_suffix(path: str | Path) -> str:
    """The plaintext's suffix an encrypted file's header records (`FOLDER_SUFFIX` for a folder)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return Header.read(fh, str(path)).suffix  # type: ignore[arg-type]
    except OSError as exc:
        raise InputError(f"cannot read '{path}': {exc.strerror or exc}") from None


def plaintext_size(path: str | Path) -> int:
    """Size of the plaintext of an encrypted file, from its header and size alone."""
    path = Path(path)
    with path.open("rb") as fh:
        header = Header.read(fh, str(path))  # type: ignore[arg-type]
        body = os.fstat(fh.fileno()).st_size - len(header.raw)
    return sum(s - TAG for s in _chunk_sizes(body, header.chunk_size, str(path)))


class InMemoryFile(io.RawIOBase):
    """A read-only, seekable file over decrypted bytes in anonymous memory.

    ``torch.load`` and ``torch.export.load`` read it like a file on disk; the scanner
    reads `buffer` (the map itself) without a copy.
    """

    def __init__(self, buffer: mmap.mmap | bytes, name: str, suffix: str) -> None:
        super().__init__()
        self.buffer = buffer
        self.name = name
        self.suffix = suffix
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(b), len(self.buffer) - self._pos))
        b[:n] = self.buffer[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.buffer)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self.buffer)

    def __str__(self) -> str:  # messages name the encrypted file
        return self.name


def decrypt_to_memory(path: str | Path, key: bytes) -> InMemoryFile:
    """Decrypt ``path`` into anonymous memory (nothing written to disk); authenticated."""
    path = Path(path)
    size = plaintext_size(path)
    buffer: mmap.mmap | bytes = mmap.mmap(-1, size) if size else b""

    def sink(offset: int, plain: bytes) -> None:
        if plain:  # an empty file has one empty chunk and no map
            buffer[offset : offset + len(plain)] = plain  # type: ignore[index]

    header, _ = _decrypt_chunks(path, key, sink)
    return InMemoryFile(buffer, str(path), header.suffix)


def decrypt_file(source: str | Path, output: str | Path, key: bytes) -> Path:
    """Decrypt ``source`` into ``output``; nothing is left at ``output`` unless it all verifies.

    The plaintext goes to ``output.partial`` first and is renamed only once every chunk
    authenticated, so a tampered file never leaves a partial model behind.
    """
    src, out = Path(source), Path(output)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as fout:

            def sink(offset: int, plain: bytes) -> None:
                fout.write(plain)

            _decrypt_chunks(src, key, sink)
        partial.replace(out)
    except OSError as exc:
        raise InputError(f"cannot write '{out}': {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return out
