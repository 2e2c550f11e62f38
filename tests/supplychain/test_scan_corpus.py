"""The self-built corpus: every technique gets the expected verdict, nothing runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scan_corpus import CANARY, p0_inst_open, p4_dotted_name, p4_stack_global_memo  # noqa: I001

from mlwarden.supplychain import ScanResult, Verdict, scan_file, scan_path


@pytest.fixture(scope="module")
def corpus_scan(corpus: tuple[Path, dict[str, str]]) -> ScanResult:
    root, _ = corpus
    return scan_path(root)


def _by_rel(result: ScanResult, root: Path) -> dict[str, object]:
    return {Path(f.path).relative_to(root).as_posix(): f for f in result.files}


def test_every_corpus_file_gets_its_expected_verdict(corpus, corpus_scan) -> None:
    root, expected = corpus
    got = _by_rel(corpus_scan, root)
    wrong = {
        rel: (got[rel].verdict.value, verdict)  # type: ignore[attr-defined]
        for rel, verdict in expected.items()
        if got[rel].verdict.value != verdict  # type: ignore[attr-defined]
    }
    assert not wrong, f"(got, expected): {wrong}"
    assert set(got) == set(expected)  # no file skipped, none invented
    assert corpus_scan.verdict is Verdict.UNSAFE


def test_scanning_the_whole_corpus_runs_no_payload(corpus, corpus_scan) -> None:
    root, _ = corpus
    scan_path(root, allow=["scan_corpus._Unlisted"])  # a second pass, with an allow list
    assert not (root / CANARY).exists()
    assert not list(root.rglob(CANARY))


def test_no_malicious_file_is_called_safe(corpus, corpus_scan) -> None:
    root, expected = corpus
    got = _by_rel(corpus_scan, root)
    for rel in expected:
        if rel.startswith(("evil/", "broken/")):
            assert got[rel].verdict is not Verdict.SAFE, rel  # type: ignore[attr-defined]


def test_findings_say_where_and_why(corpus) -> None:
    root, _ = corpus
    scan = scan_file(root / "evil/model.bin")
    assert scan.format == "pytorch-zip"  # found by magic bytes despite the .bin name
    crit = [f for f in scan.findings if f.id == "MLW-SCAN-001"]
    assert crit and crit[0].evidence["name"] == "open"  # builtins.open pickles as io.open
    assert crit[0].evidence["module"] in ("io", "builtins")
    loc = crit[0].location or ""
    assert loc.startswith(str(root / "evil/model.bin") + ":") and loc.endswith(
        f"@{crit[0].evidence['offset']}"
    )
    assert "data.pkl" in crit[0].evidence["member"]
    assert crit[0].atlas == ["AML.T0010.003"] and crit[0].owasp == ["ML06"]
    assert len(scan.sha256 or "") == 64 and scan.size == (root / "evil/model.bin").stat().st_size


def test_memo_stack_global_and_dotted_names_are_resolved(corpus) -> None:
    root, _ = corpus
    memo = scan_file(root / "evil/p4_stack_global_memo.pkl")
    assert {
        (f.evidence["module"], f.evidence["name"]) for f in memo.findings if f.id == "MLW-SCAN-001"
    } == {("builtins", "open")}
    dotted = scan_file(root / "evil/p4_dotted.pkl")
    names = {f.evidence.get("name") for f in dotted.findings if f.id == "MLW-SCAN-001"}
    assert "Path.touch" in names


def test_every_pickle_of_a_stream_is_read(corpus) -> None:
    root, _ = corpus
    scan = scan_file(root / "evil/second_pickle.pkl")
    first_len = len(__import__("pickle").dumps({"ok": 1}, protocol=2))
    offsets = [f.evidence["offset"] for f in scan.findings if f.id == "MLW-SCAN-001"]
    assert offsets and min(offsets) > first_len  # found in the second pickle


def test_legacy_appended_pickle_and_polyglot_are_found(corpus) -> None:
    root, _ = corpus
    trailing = scan_file(root / "evil/legacy_trailing.pth")
    assert {"MLW-SCAN-033", "MLW-SCAN-001"} <= {f.id for f in trailing.findings}
    poly = scan_file(root / "broken/polyglot.pt")
    assert poly.verdict is Verdict.UNSAFE


def test_zip_integrity_findings_name_the_defect(corpus) -> None:
    root, _ = corpus
    details = {
        name: " ".join(f.detail for f in scan_file(root / "broken" / name).findings)
        for name in ("name_mismatch.pt", "bad_crc.pt", "encrypted_flag.pt", "zip_bomb.pt")
    }
    assert "central directory" in details["name_mismatch.pt"]
    assert "CRC" in details["bad_crc.pt"]
    assert "encrypted" in details["encrypted_flag.pt"]
    assert "ratio" in details["zip_bomb.pt"]


@pytest.mark.parametrize("build", [p0_inst_open, p4_stack_global_memo, p4_dotted_name])
def test_the_payloads_are_live(tmp_path: Path, build) -> None:
    """Loading a payload (in a child process, inside tmp) really creates its canary, so the
    corpus tests above are not passing on inert files."""
    canary = tmp_path / CANARY
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(build(str(canary)))
    assert scan_file(payload).verdict is Verdict.UNSAFE
    # deliberately unpickling our own payload in a child process to prove it acts
    code = "import pickle,sys; pickle.loads(open(sys.argv[1],'rb').read())"
    subprocess.run(
        [sys.executable, "-c", code, str(payload)],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert canary.exists()


def test_ensure_scanned_is_the_load_gate(corpus) -> None:
    from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError
    from mlwarden.supplychain import ensure_scanned

    root, _ = corpus
    assert ensure_scanned(root / "benign/state_dict.pt").sha256 is None  # no digest: cheap
    with pytest.raises(UnsafeArtefactError) as exc:
        ensure_scanned(root / "evil/model.bin")
    assert exc.value.exit_code == 3 and "open" in str(exc.value)
    with pytest.raises(UnsafeArtefactError):
        ensure_scanned(root / "evil/unknown_global.pt")
    ok = ensure_scanned(root / "evil/unknown_global.pt", allow=["scan_corpus._Unlisted"])
    assert ok.verdict is Verdict.SAFE
    with pytest.raises(ModelLoadError):
        ensure_scanned(root / "nothing.pt")
