"""Factory + weights: bad factory paths and mismatching weights fail with named causes."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mlwarden.core import Classifier, ModelLoadError
from mlwarden.io import build_from_factory, load_model, save_weights
from mlwarden.models import MLP

FACTORY = "mlwarden.models:SmallCNN"


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's own module on sys.path with factories that misbehave in different ways."""
    name = f"user_factories_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from mlwarden.models import SmallCNN

            NOT_CALLABLE = 3

            def raises():
                raise RuntimeError("CUDA out of memory in user code")

            def returns_dict():
                return {"not": "a module"}

            class Nested:
                @staticmethod
                def build():
                    return SmallCNN()
            """
        )
    )
    (tmp_path / f"{name}_broken.py").write_text("import this_package_does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in (name, f"{name}_broken"):
        sys.modules.pop(mod, None)


@pytest.mark.parametrize(
    ("suffix", "pattern"),
    [
        ("", r"must look like 'package.module:callable'"),
        (":", r"must look like 'package.module:callable'"),
        (":NOT_CALLABLE", r"is a int, not callable"),
        (":missing_attr", r"has no attribute 'missing_attr'"),
        (":raises", r"raised RuntimeError: CUDA out of memory in user code"),
        (":returns_dict", r"returned a dict, not a torch.nn.Module"),
        ("_broken:f", r"module 'this_package_does_not_exist_xyz' is not installed"),
    ],
)
def test_bad_factories_name_the_path_and_the_cause(
    user_module: str, suffix: str, pattern: str
) -> None:
    factory = user_module + suffix
    with pytest.raises(ModelLoadError, match=pattern) as info:
        build_from_factory(factory)
    assert factory in str(info.value)


def test_missing_module_and_nested_attribute(user_module: str) -> None:
    with pytest.raises(ModelLoadError, match="'no_such_pkg_q' is not installed"):
        build_from_factory("no_such_pkg_q.models:Net")
    assert isinstance(build_from_factory(f"{user_module}:Nested.build"), torch.nn.Module)


def test_missing_factory_through_load_model(saved: dict[str, Path], digits_cnn: Classifier) -> None:
    with pytest.raises(ModelLoadError, match="mlwarden.models:NoSuchNet"):
        load_model(saved["pt"], factory="mlwarden.models:NoSuchNet", spec=digits_cnn.spec)


def test_wrong_keys_are_named(tmp_path: Path, digits_cnn: Classifier) -> None:
    state = dict(digits_cnn.module.state_dict())
    del state["embedding.0.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
    msg = str(info.value)
    assert "missing keys embedding.0.bias;" in msg
    assert "unexpected keys extra.weight" in msg
    assert "head.weight" not in msg  # matching keys are not reported


def test_wrong_architecture_lists_every_problem(tmp_path: Path, digits_cnn: Classifier) -> None:
    path = tmp_path / "mlp.pt"
    torch.save(MLP(64, 10, (32,)).state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
    msg = str(info.value)
    assert "missing keys embedding.0.bias, embedding.0.weight, features.2.bias" in msg
    assert "features.0.weight (32, 64) vs (16, 1, 3, 3)" in msg


def test_shape_mismatch_is_named(tmp_path: Path, digits_cnn: Classifier) -> None:
    from mlwarden.models import SmallCNN

    path = save_weights(SmallCNN(width=8), tmp_path / "narrow.safetensors", spec=digits_cnn.spec)
    with pytest.raises(
        ModelLoadError,
        match=r"shape mismatches .*features.0.weight \(8, 1, 3, 3\) "
        r"vs \(16, 1, 3, 3\)",
    ):
        load_model(path, factory=FACTORY)


def test_wrapper_prefix_and_checkpoint_dicts_are_unwrapped(
    tmp_path: Path, digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    state = digits_cnn.module.state_dict()
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "step": 7}, ddp)
    model = load_model(ddp, factory=FACTORY, spec=digits_cnn.spec, device="cpu")
    assert isinstance(model, Classifier)
    torch.testing.assert_close(model.logits(x), digits_cnn.logits(x))


def test_dict_that_is_not_a_state_dict(tmp_path: Path, digits_cnn: Classifier) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ModelLoadError, match="not a state dict: entries epoch, lr are not tensors"):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelLoadError, match="holds a list, not a state dict"):
        load_model(path, factory=FACTORY, spec=digits_cnn.spec)
