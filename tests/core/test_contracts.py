"""The core contracts behave as documented."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from mlwarden.core import (
    Classifier,
    ClassifierOracle,
    DataError,
    Finding,
    InputError,
    InputSpec,
    OracleError,
    Report,
    Severity,
)
from mlwarden.core.device import resolve_device
from mlwarden.core.oracle import BudgetExhausted


def test_trained_fixture_is_accurate(digits_cnn, digits_split):
    _, test = digits_split
    assert digits_cnn.accuracy(test.x, test.y) > 0.93


def test_batched_logits_match_unbatched(digits_cnn, digits_split):
    _, test = digits_split
    full = digits_cnn.logits(test.x, batch_size=None)
    small = digits_cnn.logits(test.x, batch_size=7)
    assert torch.allclose(full, small, atol=1e-5)


def test_features_through_hooks(digits_cnn, digits_split):
    _, test = digits_split
    feats = digits_cnn.features(test.x[:10], "embedding", batch_size=3)
    assert feats.shape == (10, 64)
    assert digits_cnn.penultimate_layer() == "embedding"
    with pytest.raises(InputError, match="does not exist"):
        digits_cnn.features(test.x[:2], "nope")


def test_normalisation_lives_inside_the_classifier(digits_cnn, digits_split):
    _, test = digits_split
    spec = digits_cnn.spec.model_copy(update={"mean": (0.5,), "std": (2.0,)})
    wrapped = Classifier(copy.deepcopy(digits_cnn.module), spec)
    expected = digits_cnn.module((test.x[:5] - 0.5) / 2.0)
    assert torch.allclose(wrapped(test.x[:5]), expected, atol=1e-6)


def test_spec_rejects_bad_batches(digits_spec):
    with pytest.raises(DataError, match="shape"):
        digits_spec.validate_batch(torch.zeros(2, 64))
    bad = torch.zeros(3, 1, 8, 8)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        digits_spec.validate_batch(bad)
    with pytest.raises(DataError, match="outside the input bounds"):
        digits_spec.validate_batch(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(DataError, match=r"\[0, 9\]"):
        digits_spec.validate_labels(torch.tensor([0, 10]))


def test_spec_validates_its_own_fields():
    with pytest.raises(ValueError, match="low < high"):
        InputSpec(shape=(3,), bounds=(1.0, 0.0), class_names=("a", "b"))
    with pytest.raises(ValueError, match="at least 2"):
        InputSpec(shape=(3,), class_names=("a",))
    with pytest.raises(ValueError, match="together"):
        InputSpec(shape=(3,), class_names=("a", "b"), mean=(0.1,))


def test_exported_program_mode_handling(digits_cnn, digits_split):
    """Exported graphs refuse .eval(); the wrapper must still work with them."""
    _, test = digits_split
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(
        digits_cnn.module.eval(), (test.x[:4],), dynamic_shapes={"x": {0: batch}}
    )
    wrapped = Classifier(ep.module(), digits_cnn.spec)
    wrapped.train()
    wrapped.eval()
    assert torch.equal(wrapped.predict(test.x[:20]), digits_cnn.predict(test.x[:20]))


def test_report_json_round_trip():
    report = Report(title="t", metrics={"clean_accuracy": 0.9})
    report.add(
        Finding(id="MLW-X-1", title="x", severity=Severity.HIGH, atlas=["AML.T0015"]),
        Finding(id="MLW-X-2", title="y", severity="low"),
    )
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.worst_severity is Severity.HIGH
    assert [f.id for f in again.at_or_above("medium")] == ["MLW-X-1"]
    assert json.loads(report.to_json())["findings"][0]["severity"] == "high"


def test_oracle_counts_and_budgets(digits_cnn, digits_split):
    _, test = digits_split
    oracle = ClassifierOracle(digits_cnn, budget=10)
    probs = oracle(test.x[:6])
    assert probs.shape == (6, 10) and oracle.queries == 6
    with pytest.raises(BudgetExhausted):
        oracle(test.x[:6])
    labels = ClassifierOracle(digits_cnn, output="labels").labels(test.x[:6])
    assert torch.equal(labels, probs.argmax(1))
    assert issubclass(BudgetExhausted, OracleError)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_light_imports_do_not_load_torch():
    code = "import sys, mlwarden, mlwarden.core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
