"""Format-specific checks: safetensors headers, ONNX external data, NumPy, compressed joblib."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from scan_corpus import CANARY, Evil, onnx_model

from mlwarden.supplychain import Verdict, scan_file


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
            "overlaps",
        ),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "unused"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(4), "past the"),
        ({"a": {"dtype": "EVIL", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "invalid shape"),
        ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
    ],
)
def test_safetensors_header_defects(tmp_path: Path, header: dict, data: bytes, needle: str) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(_safetensors(header, data))
    scan = scan_file(p)
    assert scan.verdict is Verdict.UNREADABLE
    assert any(needle in f.detail for f in scan.findings), [f.detail for f in scan.findings]


def test_safetensors_duplicate_keys_and_valid_file(tmp_path: Path) -> None:
    ok = tmp_path / "ok.safetensors"
    ok.write_bytes(
        _safetensors({"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}, bytes(8))
    )
    assert scan_file(ok).verdict is Verdict.SAFE
    raw = (
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", '
        b'"shape": [1], "data_offsets": [0, 1]}}'
    )
    dup = tmp_path / "dup.safetensors"
    dup.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00")
    assert any("duplicate" in f.detail for f in scan_file(dup).findings)


def test_onnx_external_data_inside_and_outside_the_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(bytes(8))
    onnx_model(model_dir / "inside.onnx", external="weights.bin")
    assert scan_file(model_dir / "inside.onnx").verdict is Verdict.SAFE

    onnx_model(model_dir / "missing.onnx", external="nope.bin")
    assert any(f.id == "MLW-SCAN-043" for f in scan_file(model_dir / "missing.onnx").findings)

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    os.symlink(secret, model_dir / "link.bin")  # stays in the folder by name only
    onnx_model(model_dir / "symlink.onnx", external="link.bin")
    assert scan_file(model_dir / "symlink.onnx").verdict is Verdict.UNSAFE

    onnx_model(model_dir / "absolute.onnx", external=str(secret))
    scan = scan_file(model_dir / "absolute.onnx")
    assert scan.verdict is Verdict.UNSAFE and scan.findings[0].evidence["external_location"] == str(
        secret
    )


def test_npy_truncated_and_bad_header(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(100, dtype=np.int64))
    p = tmp_path / "cut.npy"
    p.write_bytes(buf.getvalue()[:-16])
    scan = scan_file(p)
    assert scan.verdict is Verdict.UNREADABLE and "truncated" in scan.findings[0].detail
    bad = tmp_path / "bad.npy"
    header = b"{'descr': __import__('os'), 'fortran_order': False, 'shape': (1,), }"
    bad.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
    assert scan_file(bad).verdict is Verdict.UNREADABLE  # literal parsing, never evaluated


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "xz"])
def test_compressed_joblib_is_expanded_and_scanned(tmp_path: Path, compress: str) -> None:
    import joblib

    benign = tmp_path / f"ok.{compress}.joblib"
    joblib.dump({"w": np.ones((3, 3))}, benign, compress=(compress, 3))
    scan = scan_file(benign)
    assert scan.verdict is Verdict.SAFE and scan.format.startswith(compress), scan.format
    evil = tmp_path / f"evil.{compress}.joblib"
    joblib.dump({"w": np.ones(3), "p": Evil(str(tmp_path / CANARY))}, evil, compress=(compress, 3))
    assert scan_file(evil).verdict is Verdict.UNSAFE
    assert not (tmp_path / CANARY).exists()
