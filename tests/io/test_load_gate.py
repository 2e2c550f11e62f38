"""The safety gate: hostile files are refused before any of their code can run,
broken files fail with one clear line."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from mlwarden.core import Classifier, ModelLoadError, ParameterError, UnsafeArtefactError
from mlwarden.io import ensure_safe, load_model

FACTORY = "mlwarden.models:SmallCNN"


class _MakeDir:
    """A pickle payload with a visible, harmless side effect: it creates a directory."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.target,))


def test_state_dict_with_code_is_refused_and_never_runs(
    tmp_path: Path, digits_cnn: Classifier
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = dict(digits_cnn.module.state_dict())
    state["payload"] = _MakeDir(marker)  # type: ignore[assignment]
    torch.save(state, path)
    with pytest.raises(UnsafeArtefactError, match=r"imports posix.mkdir|imports nt.mkdir") as info:
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
    assert info.value.exit_code == 3
    assert not marker.exists()


def test_legacy_format_and_bare_pickles_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": _MakeDir(marker)}, legacy, _use_new_zipfile_serialization=False)
    bare = tmp_path / "bare.bin"
    bare.write_bytes(pickle.dumps(_MakeDir(marker), protocol=2))
    for path in (legacy, bare):
        with pytest.raises(UnsafeArtefactError, match=r"imports (posix|nt).mkdir .* calls it"):
            ensure_safe(path)
    assert not marker.exists()


def test_whole_pickled_model_is_refused_naming_its_classes(
    tmp_path: Path, digits_cnn: Classifier
) -> None:
    path = tmp_path / "whole.pt"
    torch.save(digits_cnn.module, path)
    with pytest.raises(UnsafeArtefactError, match=r"mlwarden.models.small.SmallCNN"):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)


def test_allow_lets_a_trusted_global_through(
    tmp_path: Path, digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save(
        {"state_dict": digits_cnn.module.state_dict(), "hparams": argparse.Namespace(lr=0.1)}, path
    )
    with pytest.raises(UnsafeArtefactError, match="argparse.Namespace"):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
    model = load_model(
        path, factory=FACTORY, spec=digits_cnn.spec, allow=["argparse.Namespace"], device="cpu"
    )
    x, _ = test_batch
    torch.testing.assert_close(model.logits(x), digits_cnn.logits(x))  # type: ignore[union-attr]


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            zout.writestr(info, replace.get(rel, zin.read(info.filename)))
        for rel, data in add.items():
            zout.writestr(f"{root}/{rel}", data)


def test_pt2_with_a_pickle_payload_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    """torch.export.load falls back to an unrestricted unpickle for sample inputs; we do not."""
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save((_MakeDir(marker),), payload)
    evil = tmp_path / "evil.pt2"
    _rewrite_zip(saved["pt2"], evil, {"data/sample_inputs/model.pt": payload.getvalue()}, {})
    with pytest.raises(UnsafeArtefactError, match=r"sample_inputs/model.pt.*mkdir"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("data/aotinductor/model/model.so", "AOTInductor"),
        ("data/constants/opaque_obj_0", "opaque object"),
    ],
)
def test_pt2_with_native_code_or_opaque_objects_is_refused(
    saved: dict[str, Path], tmp_path: Path, member: str, reason: str
) -> None:
    evil = tmp_path / "native.pt2"
    _rewrite_zip(saved["pt2"], evil, {}, {member: b"\x7fELF" + b"\0" * 60})
    with pytest.raises(UnsafeArtefactError, match=reason):
        load_model(evil)


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("kind", ["pt2", "safetensors", "pt", "onnx"])
def test_truncated_and_empty_files_fail_with_one_clear_line(
    saved: dict[str, Path], tmp_path: Path, digits_cnn: Classifier, kind: str
) -> None:
    kw = {} if kind in ("pt2", "onnx") else {"factory": FACTORY, "spec": digits_cnn.spec}
    truncated = _truncate(saved[kind], tmp_path / f"cut.{kind}")
    with pytest.raises(ModelLoadError, match="corrupt|truncated") as info:
        load_model(truncated, **kw)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    empty = tmp_path / f"empty.{kind}"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        load_model(empty, **kw)


def test_flipped_bytes_in_a_pt2_graph_fail_cleanly(saved: dict[str, Path], tmp_path: Path) -> None:
    with zipfile.ZipFile(saved["pt2"]) as zin:
        name = next(n for n in zin.namelist() if n.endswith("models/model.json"))
        text = zin.read(name)
    broken = tmp_path / "broken.pt2"
    _rewrite_zip(saved["pt2"], broken, {"models/model.json": text[: len(text) // 3]}, {})
    with pytest.raises(ModelLoadError, match="cannot read .* as a torch.export program"):
        load_model(broken)


def test_random_bytes_are_never_loaded(tmp_path: Path, digits_cnn: Classifier) -> None:
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1))
    for suffix in (".pt2", ".onnx", ".safetensors"):
        path = tmp_path / f"noise{suffix}"
        path.write_bytes(bytes(noise.to(torch.uint8).tolist()))
        kw = {} if suffix in (".pt2", ".onnx") else {"factory": FACTORY, "spec": digits_cnn.spec}
        with pytest.raises(ModelLoadError):
            load_model(path, **kw)
    # random bytes in a pickle container: refused, whichever way the unpickler fails
    path = tmp_path / "noise.pt"
    path.write_bytes(b"\x80\x02" + bytes(noise.to(torch.uint8).tolist()))
    with pytest.raises((UnsafeArtefactError, ModelLoadError)):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)


def test_invalid_stored_spec_is_named(saved: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "badspec.pt2"
    _rewrite_zip(saved["pt2"], broken, {"extra/mlwarden/spec.json": b'{"shape": [0]}'}, {})
    with pytest.raises(ModelLoadError, match="input spec stored in 'badspec.pt2' is invalid"):
        load_model(broken)


def test_an_allow_entry_that_names_nothing_is_a_clear_error(
    tmp_path: Path, digits_cnn: Classifier
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(digits_cnn.module.state_dict(), path)
    with pytest.raises(ParameterError, match="no_such_module.Thing"):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec, allow=["no_such_module.Thing"])
