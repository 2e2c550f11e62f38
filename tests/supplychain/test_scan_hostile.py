"""Hostile input ends quickly, with a finding, in bounded memory."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.supplychain import PickleLimits, ScanLimits, Verdict, scan_file

_MIB = 1 << 20


def _scan_bounded(path: Path, max_mib: int = 96, limits: ScanLimits | None = None):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        scan = scan_file(path, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_mib * _MIB, f"peak {peak / _MIB:.1f} MiB"
    return scan


@pytest.mark.timeout(60)
def test_mark_run(tmp_path: Path) -> None:
    p = tmp_path / "marks.pkl"
    p.write_bytes(b"\x80\x02" + b"(" * _MIB)
    scan = _scan_bounded(p)
    assert scan.verdict is Verdict.UNREADABLE
    assert any(f.id == "MLW-SCAN-011" and "MARK" in f.detail for f in scan.findings)


@pytest.mark.timeout(60)
def test_nested_container_bomb(tmp_path: Path) -> None:
    """Billion laughs: each level is a list holding the previous one ten times (memo
    references), plus a deep chain of nested lists."""
    body = bytearray(b"\x80\x04]\x94")  # level 0: [] memo 0
    for level in range(1, 60):
        body += b"](" + b"h" + bytes([level - 1]) + b"" + (b"h" + bytes([level - 1])) * 9 + b"e\x94"
        body += b"0"  # pop, the list stays in the memo
    body += b"h" + bytes([59]) + b"."
    p = tmp_path / "laughs.pkl"
    p.write_bytes(bytes(body))
    scan = _scan_bounded(p)
    assert scan.verdict is Verdict.SAFE  # read statically, it is small; nothing expands

    deep = tmp_path / "deep.pkl"
    deep.write_bytes(b"\x80\x02" + b"]" * 60_000 + b"a" * 60_000 + b".")
    scan = _scan_bounded(deep, max_mib=16, limits=ScanLimits(pickle=PickleLimits(max_stack=50_000)))
    assert scan.verdict is Verdict.UNREADABLE
    assert any(f.id == "MLW-SCAN-011" for f in scan.findings)


@pytest.mark.timeout(60)
def test_ten_gigabyte_safetensors_header(tmp_path: Path) -> None:
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", 10 * 1024**3) + b'{"a":' + b" " * 1000)
    scan = _scan_bounded(p, max_mib=8)
    assert scan.verdict is Verdict.UNREADABLE
    assert any("limit" in f.detail for f in scan.findings)


@pytest.mark.timeout(60)
def test_zip_bomb_is_not_expanded(corpus) -> None:
    root, _ = corpus
    p = root / "broken/zip_bomb.pt"  # 96 MiB of zeros in a ~100 kB member
    scan = _scan_bounded(p, max_mib=32)
    assert scan.verdict is Verdict.UNREADABLE
    assert any(f.id == "MLW-SCAN-021" for f in scan.findings)


@pytest.mark.timeout(60)
def test_opcode_flood_hits_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "flood.pkl"
    p.write_bytes(b"\x80\x02N" + b"2" * 100_000 + b".")  # DUP flood
    scan = scan_file(p, limits=ScanLimits(pickle=PickleLimits(max_opcodes=10_000)))
    assert any(f.id == "MLW-SCAN-011" and "opcodes" in f.detail for f in scan.findings)


def test_tensor_data_crc_is_checked_in_deep_mode(tmp_path: Path) -> None:
    import io
    import zipfile

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1 << 19)}, buf)  # a 2 MiB tensor member
    data = bytearray(buf.getvalue())
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = next(i for i in zf.infolist() if i.filename.endswith("data/0"))
    n, e = struct.unpack_from("<2H", data, info.header_offset + 26)
    data[info.header_offset + 30 + n + e + 100] ^= 0xFF
    p = tmp_path / "flipped.pt"
    p.write_bytes(bytes(data))
    assert scan_file(p).verdict is Verdict.SAFE  # default: tensor bytes are skipped
    deep = scan_file(p, limits=ScanLimits(verify_data_crc=True))
    assert deep.verdict is Verdict.UNREADABLE and any("CRC" in f.detail for f in deep.findings)


def test_stack_limit_counts_items_saved_under_marks() -> None:
    from mlwarden.supplychain.pickle_reader import read_pickle

    segment = b"(" + b"N" * 3000  # each MARK saves 3000 items
    trace = read_pickle(b"\x80\x02" + segment * 20 + b".", limits=PickleLimits(max_stack=10_000))
    assert trace.limit is not None and "stack" in trace.limit


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_corpus_files_never_crash_the_scanner(corpus, tmp_path: Path, data) -> None:
    """Flipped, cut and inserted bytes in real model files: always a verdict, never an
    exception, never the scanner's own fail-closed "could not parse" (a parser defect)."""
    root, expected = corpus
    rel = data.draw(st.sampled_from(sorted(r for r in expected if "zip_bomb" not in r)))
    raw = bytearray((root / rel).read_bytes())
    if raw:
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                raw[pos] = data.draw(st.integers(0, 255))
            elif action == "cut":
                del raw[pos:]
                if not raw:
                    break
            else:
                raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    target = tmp_path / ("m" + Path(rel).suffix)
    target.write_bytes(bytes(raw))
    scan = scan_file(target, digest=False)
    assert isinstance(scan.verdict, Verdict)
    assert not [f for f in scan.findings if "could not parse" in f.detail]
