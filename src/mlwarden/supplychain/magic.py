"""The first bytes by which the scanner recognises each format, in one place.

The dispatcher (`scanner._dispatch`) needs only these to decide which format parser a
file goes to; keeping them apart from the parsers lets it import a parser only when a
file of its format turns up, so ``mlwarden scan`` on one pickle does not pay for the
zip, ONNX, Keras or GGUF code.
"""

from __future__ import annotations

import struct

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GGUF_MAGIC = b"GGUF"
ENCRYPTED_MAGIC = b"MLWENC"  # mlwarden encrypt (supplychain/encryption.py)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy format
CHUNK = 1 << 20  # bytes read or decompressed at a time


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length followed by a JSON object."""
    del size  # the length is validated by `scan_safetensors`, whatever it claims
    return len(head) >= 9 and struct.unpack_from("<Q", head)[0] >= 2 and head[8:9] == b"{"
