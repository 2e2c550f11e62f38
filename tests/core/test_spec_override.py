"""Partial specs, their merge over what a model file says, and a user's own nn.Module."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from mlwarden.audit.registry import AuditContext, CheckSkipped
from mlwarden.core import Classifier, InputSpec, ModelLoadError, ParameterError, SpecOverride
from mlwarden.core.contract import SPEC_ASSUMED_ID, is_model
from mlwarden.core.findings import Report
from mlwarden.core.oracle import ClassifierOracle
from mlwarden.core.spec import DEFAULT_BOUNDS, bounds_assumption, complete_spec
from mlwarden.io import from_module


def test_an_override_checks_each_field_it_gives_like_a_full_spec() -> None:
    assert SpecOverride().given() == {}
    assert SpecOverride(bounds=(0, 255)).given() == {"bounds": (0.0, 255.0)}
    for bad, message in [
        ({"bounds": (1, 0)}, "low < high"),
        ({"shape": (0, 8)}, "positive sizes"),
        ({"class_names": ("only",)}, "at least 2"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"mean": (0.5,)}, "mean and std must be given together"),
        ({"shape": (3, 8, 8), "mean": (0.5, 0.5), "std": (1.0, 1.0)}, "1 or 3 values"),
        ({"colour": "red"}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=message):
            SpecOverride(**bad)


def test_complete_spec_precedence_user_then_stored_then_graph() -> None:
    graph = {"shape": (1, 8, 8), "num_classes": 10}
    spec, assumed = complete_spec(None, source="m.pt2", **graph)
    assert spec == InputSpec.for_classes((1, 8, 8), 10) and spec.bounds == DEFAULT_BOUNDS
    assert (
        assumed
        == (bounds_assumption(),)
        == ("value bounds [0, 1] assumed (the file does not say)",)
    )
    stored = InputSpec(shape=(1, 8, 8), class_names=tuple("abcdefghij"), bounds=(0, 16))
    spec, assumed = complete_spec(
        SpecOverride(bounds=(0, 255)), source="m.pt2", stored=stored, **graph
    )
    assert spec.bounds == (0, 255) and spec.class_names == tuple("abcdefghij") and assumed == ()
    whole = InputSpec.for_classes((1, 8, 8), 10, bounds=(-1, 1))
    assert complete_spec(whole, source="m.pt2", stored=stored, **graph) == (whole, ())


@pytest.mark.parametrize(
    ("given", "graph", "message"),
    [
        (
            SpecOverride(shape=(1, 8, 9)),
            {"shape": (1, 8, 8), "num_classes": 10},
            r"'m.pt2' takes inputs of shape \(N, 1, 8, 8\) but the spec says \(N, 1, 8, 9\)",
        ),
        (
            SpecOverride(class_names=("a", "b")),
            {"shape": (1, 8, 8), "num_classes": 10},
            "outputs 10 class scores but the spec names 2 classes",
        ),
        (
            None,
            {"shape": (1, None, 8), "num_classes": 10},
            r"\(N, 1, \?, 8\) with a dynamic dimension; give the input shape",
        ),
        (None, {"shape": (1, 8, 8), "num_classes": None}, "give class_names"),
        (SpecOverride(bounds=(0, 1)), {}, "carries no input spec"),
        (
            SpecOverride(mean=(0.5, 0.5), std=(1, 1)),
            {"shape": (1, 8, 8), "num_classes": 10},
            "mean needs 1 value",
        ),
    ],
)
def test_complete_spec_refusals_say_what_to_give(
    given: SpecOverride | None, graph: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        complete_spec(given, source="m.pt2", **graph)  # type: ignore[arg-type]


def test_a_dynamic_size_accepts_the_users_shape() -> None:
    spec, _ = complete_spec(
        SpecOverride(shape=(1, 6, 6)), source="m", shape=(1, None, None), num_classes=3
    )
    assert spec.shape == (1, 6, 6) and spec.num_classes == 3


def test_from_module_reads_the_class_count_and_keeps_the_module(
    digits_cnn: Classifier, digits_split
) -> None:
    _, test = digits_split
    module = copy.deepcopy(digits_cnn.module).train()
    model = from_module(module, SpecOverride(shape=(1, 8, 8)), name="mine")
    assert model.name == "mine" and model.num_classes == 10
    assert model.spec_assumptions == (bounds_assumption(),)
    assert module.training is False  # the Classifier switches it to eval mode
    assert torch.equal(model.predict(test.x[:20]), digits_cnn.predict(test.x[:20]))
    told = from_module(module, SpecOverride(shape=(1, 8, 8), bounds=(0, 1)))
    assert told.spec_assumptions == () and told.name == type(module).__name__
    assert from_module(digits_cnn, digits_cnn.spec) is digits_cnn
    with pytest.raises(ModelLoadError, match="carries no input spec"):
        from_module(module, SpecOverride(bounds=(0, 1)))
    with pytest.raises(ParameterError, match=r"failed on a batch of shape \(2, 3, 8, 8\)"):
        from_module(module, SpecOverride(shape=(3, 8, 8)))
    with pytest.raises(ParameterError, match="expected a torch.nn.Module"):
        from_module("model.pt2", digits_cnn.spec)  # type: ignore[arg-type]


def test_is_model_knows_both_kinds(digits_cnn: Classifier) -> None:
    assert is_model(digits_cnn) and is_model(ClassifierOracle(digits_cnn))
    assert not is_model(digits_cnn.module) and not is_model("model.pt2")


def test_audit_context_skips_with_the_contracts_reason(digits_cnn: Classifier) -> None:
    ctx = AuditContext(_oracle=ClassifierOracle(digits_cnn), check="evasion")
    with pytest.raises(
        CheckSkipped, match="the evasion check needs gradients; 'digits-cnn' is a score oracle"
    ):
        _ = ctx.classifier
    assert ctx.oracle is ctx._oracle and ctx.spec == digits_cnn.spec
    white = AuditContext(_classifier=digits_cnn, batch_size=7)
    assert white.classifier is digits_cnn
    assert isinstance(white.oracle, ClassifierOracle) and white.oracle.batch_size == 7


def test_audit_context_notes_assumed_bounds_once(digits_cnn: Classifier, tmp_path) -> None:
    program = torch.export.export(
        copy.deepcopy(digits_cnn.module).eval(),
        (torch.rand(2, 1, 8, 8),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    path = tmp_path / "plain.pt2"
    torch.export.save(program, str(path))
    report = Report()
    ctx = AuditContext(model_source=str(path), device="cpu", report=report)
    assert ctx.classifier.spec_assumptions == (bounds_assumption(),)
    _ = ctx.oracle
    assert [f.id for f in report.findings] == [SPEC_ASSUMED_ID]
    told = AuditContext(
        model_source=str(path), device="cpu", spec_override=SpecOverride(bounds=(0, 1))
    )
    assert told.classifier.spec_assumptions == () and told.report.findings == []
