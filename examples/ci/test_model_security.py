"""Security gates for your own model, run by pytest in CI next to your other tests.

Copy this file into your tests folder and set the paths (or the environment
variables) to your model and a held-out evaluation set:

    pip install "mlwarden"
    export MLWARDEN_MODEL=models/classifier.pt2 MLWARDEN_DATA=data/test.npz
    pytest tests/test_model_security.py

The model may be a ``.pt2`` (``mlwarden.io.save_pt2``), ``.onnx`` (black box: accuracy,
scan and membership only), or weights + factory; the data an ``.npz`` with ``x``
(inputs inside the model's bounds) and ``y`` (integer labels). Thresholds below are
examples: set them from your own baseline (each assertion returns what it measured,
printed here with ``-s``) and tighten them as the model improves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlwarden.testing import (
    assert_accuracy,
    assert_no_membership_leak,
    assert_robust,
    assert_scan_safe,
)

MODEL = Path(os.environ.get("MLWARDEN_MODEL", "models/classifier.pt2"))
DATA = os.environ.get("MLWARDEN_DATA", "data/test.npz")
# Optional: records the model was trained on, for the membership-inference gate.
MEMBERS = os.environ.get("MLWARDEN_MEMBERS", "")
EPS = float(os.environ.get("MLWARDEN_EPS", "0.03"))


@pytest.fixture(scope="module")
def model():
    from mlwarden.io import load_model

    return load_model(MODEL)  # refuses files that fail the supply-chain scan


@pytest.fixture(scope="module")
def test_data(model):
    from mlwarden.io import load_data

    return load_data(DATA, spec=model.spec).take(500)


def test_model_file_is_safe_to_load() -> None:
    """No pickle code execution, no malformed container (runs without torch)."""
    assert_scan_safe(MODEL, fail_on="suspicious")


def test_clean_accuracy(model, test_data) -> None:
    acc = assert_accuracy(model, test_data.x, test_data.y, min_accuracy=0.90)
    print(f"clean accuracy {acc:.4f}")


def test_robust_to_small_perturbations(model, test_data) -> None:
    from mlwarden.core import Classifier

    if not isinstance(model, Classifier):
        pytest.skip("white-box robustness needs a .pt2 or weights model, not ONNX")
    result = assert_robust(
        model,
        test_data.x[:200],
        test_data.y[:200],
        eps=EPS,
        min_robust_accuracy=0.50,
        attack="pgd",
        steps=20,
        seed=0,
    )
    print(f"robust accuracy {result.robust_accuracy:.4f} at eps={EPS}")


@pytest.mark.skipif(not MEMBERS, reason="set MLWARDEN_MEMBERS to training records to run")
def test_training_records_do_not_leak(model, test_data) -> None:
    from mlwarden.io import load_data

    members = load_data(MEMBERS, spec=model.spec).take(500)
    report = assert_no_membership_leak(model, members, test_data, max_auc=0.60)
    print(f"membership AUC {report.metrics['privacy.threshold.auc']}")
