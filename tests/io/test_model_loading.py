"""Loading the same trained model from every format gives the same model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mlwarden.core import Classifier, InputSpec, ModelLoadError, SpecOverride
from mlwarden.core.layers import linear_layers
from mlwarden.core.spec import DEFAULT_BOUNDS, bounds_assumption
from mlwarden.io import (
    BatchConstrainedClassifier,
    OnnxOracle,
    load_model,
    save_pt2,
)

FACTORY = "mlwarden.models:SmallCNN"


def test_every_format_gives_the_same_predictions(
    saved: dict[str, Path], digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_batch
    reference = digits_cnn.logits(x)
    spec = digits_cnn.spec
    loaded = {
        "pt2": load_model(saved["pt2"], device="cpu"),
        "safetensors": load_model(saved["safetensors"], factory=FACTORY, device="cpu"),
        "pt": load_model(saved["pt"], factory=FACTORY, spec=spec, device="cpu"),
        "ckpt": load_model(saved["ckpt"], factory=FACTORY, spec=spec, device="cpu"),
        "onnx": load_model(saved["onnx"]),
    }
    assert isinstance(loaded["onnx"], OnnxOracle)
    ref_pred = reference.argmax(1)
    assert float((ref_pred == y).float().mean()) > 0.9  # the fixture really is trained
    for name, model in loaded.items():
        if isinstance(model, Classifier):
            assert model.spec == spec, name
            logits = model.logits(x, batch_size=37)
            torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4, msg=name)
        else:
            probs = model(x)
            torch.testing.assert_close(probs, torch.softmax(reference, 1), atol=1e-5, rtol=1e-4)
        assert torch.equal(
            model.predict(x) if isinstance(model, Classifier) else model.labels(x), ref_pred
        ), name


def test_pt2_features_come_from_hooks_on_the_real_layer(
    saved: dict[str, Path], digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    model = load_model(saved["pt2"], device="cpu")
    assert isinstance(model, Classifier)
    assert {"features", "embedding", "head", "features.0"} <= set(model.layer_names())
    for layer in ("embedding", "features"):
        got = model.features(x, layer, batch_size=64)
        torch.testing.assert_close(got, digits_cnn.features(x, layer), atol=1e-5, rtol=1e-4)
    assert model.penultimate_layer() == "embedding"
    assert linear_layers(model.module) == ["embedding.0", "head"]
    assert linear_layers(digits_cnn.module) == ["embedding.0", "head"]


def test_gradients_flow_through_a_loaded_pt2(
    saved: dict[str, Path], digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_batch
    model = load_model(saved["pt2"], device="cpu")
    assert isinstance(model, Classifier)

    def input_grad(clf: Classifier) -> torch.Tensor:
        xs = x[:16].clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(clf(xs), y[:16]).backward()
        assert xs.grad is not None
        return xs.grad

    grad = input_grad(model)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, input_grad(digits_cnn), atol=1e-6, rtol=1e-3)


def test_a_loaded_pt2_fine_tunes_like_the_eager_module(
    saved: dict[str, Path], digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = load_model(saved["pt2"], device="cpu")
    assert isinstance(model, Classifier)
    model.train()
    model.eval()  # exported graphs raise on .eval(); the wrapper must not
    eager = Classifier(copy.deepcopy(digits_cnn.module), digits_cnn.spec)
    x = test_batch[0][:64]
    target = (test_batch[1][:64] + 1) % 10  # a new task, so the loss has room to fall

    def sgd_losses(clf: Classifier) -> list[float]:
        params = [p for p in clf.parameters() if p.requires_grad]
        assert len(params) == 8, "every weight and bias must be a trainable parameter"
        opt = torch.optim.SGD(params, lr=0.01)
        losses = []
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(clf(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    exported, reference = sgd_losses(model), sgd_losses(eager)
    assert exported[-1] < exported[0]
    assert exported == pytest.approx(reference, rel=1e-4)
    torch.testing.assert_close(model.logits(x), eager.logits(x), atol=1e-4, rtol=1e-4)


def test_a_loaded_pt2_deep_copies_into_an_independent_model(
    saved: dict[str, Path], test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Fine-tuning strategies copy the teacher before training it."""
    x, y = test_batch[0][:32], test_batch[1][:32]
    teacher = load_model(saved["pt2"], device="cpu")
    before = teacher.logits(x)
    student = copy.deepcopy(teacher)
    assert type(student) is type(teacher)
    torch.testing.assert_close(student.logits(x), before)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(student(x), (y + 1) % 10).backward()
    opt.step()
    assert torch.equal(teacher.logits(x), before)
    assert (student.logits(x) - before).abs().max() > 1e-3
    assert student.features(x, "embedding").shape == (32, 64)  # hooks survive the copy


def test_normalisation_survives_pt2_safetensors_and_onnx(
    normalised_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from mlwarden.io import export_onnx, save_weights

    x, _ = test_batch
    reference = normalised_cnn.logits(x)
    # the normalisation really changes the outputs, so dropping it would be caught
    plain = Classifier(normalised_cnn.module, InputSpec.for_classes((1, 8, 8), 10))
    assert (plain.logits(x) - reference).abs().max() > 0.1

    pt2 = load_model(save_pt2(normalised_cnn, tmp_path / "n.pt2"), device="cpu")
    st = load_model(
        save_weights(normalised_cnn, tmp_path / "n.safetensors"), factory=FACTORY, device="cpu"
    )
    onnx = load_model(export_onnx(normalised_cnn, tmp_path / "n.onnx"))
    for model in (pt2, st):
        assert isinstance(model, Classifier)
        assert model.spec.mean == (0.3,) and model.spec.std == (0.5,)
        torch.testing.assert_close(model.logits(x), reference, atol=1e-4, rtol=1e-4)
    assert isinstance(onnx, OnnxOracle)
    assert not onnx.normalize_inputs  # in the graph already: applying it twice would be wrong
    torch.testing.assert_close(onnx(x), torch.softmax(reference, 1), atol=1e-5, rtol=1e-4)


def test_fixed_batch_pt2_pads_every_chunk(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_batch
    path = save_pt2(digits_cnn, tmp_path / "fixed.pt2", example=x[:8], dynamic_batch=False)
    model = load_model(path, device="cpu")
    assert isinstance(model, BatchConstrainedClassifier)
    assert model.batch_range == (8, 8)
    assert model.penultimate_layer() == "embedding"
    # the raw graph really rejects other batch sizes
    with pytest.raises(Exception, match="8"):
        model.module(x[:5])
    reference = digits_cnn.logits(x)
    for n, batch_size in ((1, 256), (5, 256), (21, 4), (45, 16)):
        got = model.logits(x[:n], batch_size=batch_size)
        assert got.shape == (n, 10)
        torch.testing.assert_close(got, reference[:n], atol=1e-4, rtol=1e-4)
    feats = model.features(x[:13], "embedding", batch_size=5)
    torch.testing.assert_close(
        feats, digits_cnn.features(x[:13], "embedding"), atol=1e-5, rtol=1e-4
    )
    # gradients through a padded batch: padding rows must not leak into real samples
    xs = x[:3].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xs), y[:3], reduction="sum").backward()
    xr = x[:3].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(digits_cnn(xr), y[:3], reduction="sum").backward()
    assert xs.grad is not None and xr.grad is not None
    torch.testing.assert_close(xs.grad, xr.grad, atol=1e-6, rtol=1e-3)
    assert model.logits(x[:0]).shape == (0, 10)


def test_spec_argument_overrides_the_stored_spec(saved: dict[str, Path]) -> None:
    names = tuple(f"digit-{i}" for i in range(10))
    spec = InputSpec(shape=(1, 8, 8), class_names=names)
    model = load_model(saved["pt2"], spec=spec, device="cpu")
    assert model.spec.class_names == names


def test_spec_that_contradicts_the_program_is_refused(saved: dict[str, Path]) -> None:
    spec = InputSpec.for_classes((3, 8, 8), 10)
    with pytest.raises(
        ModelLoadError, match=r"takes inputs of shape \(N, 1, 8, 8\) but the spec says \(N, 3, 8"
    ):
        load_model(saved["pt2"], spec=spec, device="cpu")
    with pytest.raises(ModelLoadError, match="outputs 10 class scores but the spec names 2"):
        load_model(saved["pt2"], spec=SpecOverride(class_names=("a", "b")), device="cpu")


def _plain_pt2(module: torch.nn.Module, x: torch.Tensor, path: Path, **kw: object) -> Path:
    """What a user without mlwarden writes: ``torch.export`` and ``torch.export.save``."""
    program = torch.export.export(copy.deepcopy(module).eval(), (x,), **kw)  # type: ignore[arg-type]
    torch.export.save(program, str(path))
    return path


def test_plain_pt2_gives_shape_and_classes_and_bounds_are_assumed(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    path = _plain_pt2(digits_cnn.module, x[:4], tmp_path / "bare.pt2")
    model = load_model(path, device="cpu")
    assert isinstance(model, BatchConstrainedClassifier)  # exported without dynamic shapes
    assert model.spec.shape == (1, 8, 8) and model.spec.bounds == DEFAULT_BOUNDS
    assert model.spec.class_names == tuple(str(i) for i in range(10))
    assert model.spec_assumptions == (bounds_assumption(),)
    assert torch.equal(model.predict(x), digits_cnn.predict(x))
    # the user's bounds remove the assumption; their class names win over "0".."9"
    names = tuple(f"digit-{i}" for i in range(10))
    told = load_model(path, spec=SpecOverride(bounds=(0.0, 1.0), class_names=names), device="cpu")
    assert told.spec_assumptions == () and told.spec.class_names == names
    assert load_model(path, spec=digits_cnn.spec, device="cpu").spec_assumptions == ()


def test_what_was_assumed_survives_training_and_saving(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A student of a plain export is saved with its assumption, not with the bounds as fact."""
    from mlwarden.core.training import trainable_copy
    from mlwarden.io import save_weights

    x, _ = test_batch
    batch = ({0: torch.export.Dim("batch")},)
    plain = _plain_pt2(digits_cnn.module, x[:4], tmp_path / "t.pt2", dynamic_shapes=batch)
    teacher = load_model(plain, device="cpu")
    student = trainable_copy(teacher)
    assert student.spec_assumptions == (bounds_assumption(),)
    for saved_path in (
        save_pt2(student, tmp_path / "student.pt2"),
        save_weights(student, tmp_path / "student.safetensors"),
    ):
        factory = FACTORY if saved_path.suffix == ".safetensors" else None
        again = load_model(saved_path, factory=factory, device="cpu")
        assert again.spec_assumptions == (bounds_assumption(),), saved_path.name
        told = load_model(
            saved_path, factory=factory, spec=SpecOverride(bounds=(0.0, 1.0)), device="cpu"
        )
        assert told.spec_assumptions == (), saved_path.name
    # a model whose spec was known saves nothing assumed
    known = load_model(save_pt2(digits_cnn, tmp_path / "known.pt2"), device="cpu")
    assert known.spec_assumptions == ()


def test_plain_pt2_with_a_dynamic_input_size_needs_the_shape(tmp_path: Path) -> None:
    module = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4, 3)
    )
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    path = _plain_pt2(module, torch.rand(4, 1, 8, 8), tmp_path / "dyn.pt2", dynamic_shapes=(dims,))
    with pytest.raises(ModelLoadError, match=r"\(N, 1, \?, \?\) with a dynamic dimension.*--spec"):
        load_model(path, device="cpu")
    model = load_model(path, spec=SpecOverride(shape=(1, 6, 6)), device="cpu")
    assert model.spec.shape == (1, 6, 6) and model.num_classes == 3
    assert model.logits(torch.rand(5, 1, 6, 6)).shape == (5, 3)


def test_partial_spec_is_merged_over_the_stored_one(
    saved: dict[str, Path], digits_cnn: Classifier
) -> None:
    model = load_model(saved["pt2"], spec=SpecOverride(bounds=(0.0, 2.0)), device="cpu")
    assert model.spec.bounds == (0.0, 2.0)
    assert model.spec.class_names == digits_cnn.spec.class_names
    assert model.spec_assumptions == ()  # the stored spec says everything else


def test_weights_need_a_factory_and_a_spec(saved: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="holds only weights; name the architecture"):
        load_model(saved["pt"])
    with pytest.raises(ModelLoadError, match="carries no input spec"):
        load_model(saved["pt"], factory=FACTORY)
    with pytest.raises(ModelLoadError, match="carries no input spec"):  # bounds alone: no shape
        load_model(saved["pt"], factory=FACTORY, spec=SpecOverride(bounds=(0.0, 1.0)))
    partial = SpecOverride(shape=(1, 8, 8), class_names=tuple("abcdefghij"))
    weights = load_model(saved["pt"], factory=FACTORY, spec=partial, device="cpu")
    assert weights.spec.class_names == tuple("abcdefghij")
    assert weights.spec_assumptions == (bounds_assumption(),)
    with pytest.raises(ModelLoadError, match="factory only applies to weights files"):
        load_model(saved["pt2"], factory=FACTORY)


def test_unknown_suffix_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelLoadError, match=r"unknown model format '\.h5'.*\.pt2"):
        load_model(tmp_path / "model.h5")
    with pytest.raises(ModelLoadError, match="folder without config.json"):
        load_model(tmp_path)
    (tmp_path / "dir.pt2").mkdir()
    with pytest.raises(ModelLoadError, match="folder without config.json"):
        load_model(tmp_path / "dir.pt2")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors", factory=FACTORY)
