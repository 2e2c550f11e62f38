"""`OnnxOracle`: files from other exporters, metadata flags, fixed batches, budgets."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from mlwarden.core import (
    BudgetExhausted,
    Classifier,
    DataError,
    DependencyError,
    InputSpec,
    ModelLoadError,
    SpecOverride,
)
from mlwarden.core.spec import bounds_assumption
from mlwarden.io import OnnxOracle, load_model


def _plain_export(
    module: torch.nn.Module, path: Path, *, dynamic: bool = True, batch: int = 4
) -> Path:
    """Export the way a third party would: no mlwarden metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.rand(batch, 1, 8, 8),),
            str(path),
            input_names=["pixels"],
            output_names=["out"],
            dynamic_axes={"pixels": {0: "n"}, "out": {0: "n"}} if dynamic else None,
            dynamo=False,
        )
    return path


def _set_metadata(path: Path, **props: str) -> None:
    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def test_third_party_onnx_gives_its_shape_and_gets_softmax(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    path = _plain_export(digits_cnn.module, tmp_path / "plain.onnx")
    bare = load_model(path)
    assert isinstance(bare, OnnxOracle) and bare.spec.shape == (1, 8, 8)
    assert bare.spec.class_names == tuple(str(i) for i in range(10))
    assert bare.spec_assumptions == (bounds_assumption(),)
    told = load_model(path, spec=SpecOverride(bounds=(0.0, 1.0)))
    assert told.spec_assumptions == ()
    with pytest.raises(ModelLoadError, match="outputs 10 class scores but the spec names 3"):
        load_model(path, spec=SpecOverride(class_names=("a", "b", "c")))
    oracle = load_model(path, spec=digits_cnn.spec)
    assert isinstance(oracle, OnnxOracle) and not oracle.outputs_probabilities
    probs = oracle(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(x)))
    torch.testing.assert_close(probs, digits_cnn.probabilities(x), atol=1e-5, rtol=1e-4)


def test_spec_normalisation_is_applied_when_the_graph_lacks_it(
    normalised_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    path = _plain_export(normalised_cnn.module, tmp_path / "raw.onnx")
    oracle = OnnxOracle(path, spec=normalised_cnn.spec)
    assert oracle.normalize_inputs
    torch.testing.assert_close(oracle(x), normalised_cnn.probabilities(x), atol=1e-5, rtol=1e-4)


def test_probability_outputs_are_not_softmaxed_twice(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    module = torch.nn.Sequential(digits_cnn.module, torch.nn.Softmax(dim=1))
    path = _plain_export(module, tmp_path / "probs.onnx")
    _set_metadata(path, **{"mlwarden.output": "probabilities"})
    oracle = OnnxOracle(path, spec=digits_cnn.spec)
    torch.testing.assert_close(oracle(x), digits_cnn.probabilities(x), atol=1e-5, rtol=1e-4)


def test_fixed_batch_onnx_is_padded(
    digits_cnn: Classifier, tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    path = _plain_export(digits_cnn.module, tmp_path / "fixed.onnx", dynamic=False, batch=4)
    oracle = OnnxOracle(path, spec=digits_cnn.spec, output="labels")
    assert oracle.fixed_batch == 4
    for n in (1, 3, 4, 11):
        assert torch.equal(oracle(x[:n]), digits_cnn.predict(x[:n]))


def test_budget_labels_and_query_count(
    saved: dict[str, Path], digits_cnn: Classifier, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = test_batch
    oracle = OnnxOracle(saved["onnx"], output="labels", budget=50)
    assert torch.equal(oracle(x[:30]), digits_cnn.predict(x[:30]))
    assert oracle.queries == 30 and oracle.remaining == 20
    with pytest.raises(BudgetExhausted):
        oracle(x[:21])
    assert oracle(x[0]).shape == (1,)  # a single sample is batched
    with pytest.raises(DataError, match=r"expects \(N, 1, 8, 8\)"):
        oracle(torch.rand(2, 1, 8, 9))


def test_spec_that_contradicts_the_graph_is_refused(saved: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match=r"takes inputs of shape \(N, 1, 8, 8\) but the spec"):
        OnnxOracle(saved["onnx"], spec=InputSpec.for_classes((3, 8, 8), 10))


def test_missing_onnxruntime_names_the_extra(
    saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DependencyError, match=r"mlwarden\[onnx\]"):
        load_model(saved["onnx"])
