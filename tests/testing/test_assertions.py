"""Assertion helpers on real trained models, real files and a real audit."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path

import pytest
import torch

from mlwarden.core import Classifier
from mlwarden.core.errors import ParameterError, UnsafeArtefactError
from mlwarden.testing import (
    assert_accuracy,
    assert_audit_passes,
    assert_no_membership_leak,
    assert_robust,
    assert_scan_safe,
)


def test_accuracy_passes_and_returns_the_measurement(digits_cnn: Classifier, digits_split) -> None:
    _, test = digits_split
    acc = assert_accuracy(digits_cnn, test.x, test.y, min_accuracy=0.9)
    assert acc == pytest.approx(digits_cnn.accuracy(test.x, test.y), abs=1e-6)
    assert acc > 0.9


def test_accuracy_failure_states_measured_and_required(
    digits_cnn: Classifier, digits_split
) -> None:
    _, test = digits_split
    acc = digits_cnn.accuracy(test.x, test.y)
    with pytest.raises(
        AssertionError,
        match=r"clean accuracy 0\.9\d+ \(\d+/450 correct\) is below the required 1\.0000",
    ):
        assert_accuracy(digits_cnn, test.x, test.y, min_accuracy=1.0)
    assert acc < 1.0


def test_accuracy_accepts_module_with_spec_and_numpy(
    digits_cnn: Classifier, digits_split, digits_spec
) -> None:
    _, test = digits_split
    acc = assert_accuracy(
        digits_cnn.module, test.x.numpy(), test.y.numpy(), min_accuracy=0.5, spec=digits_spec
    )
    assert acc == pytest.approx(digits_cnn.accuracy(test.x, test.y), abs=1e-6)
    with pytest.raises(ParameterError, match="spec="):
        assert_accuracy(digits_cnn.module, test.x, test.y, min_accuracy=0.5)
    with pytest.raises(ParameterError, match="min_accuracy"):
        assert_accuracy(digits_cnn, test.x, test.y, min_accuracy=1.5)


def test_accuracy_detects_a_broken_model(digits_cnn: Classifier, digits_split) -> None:
    """A model whose weights were zeroed predicts one class: ~10% on digits."""
    _, test = digits_split
    broken = copy.deepcopy(digits_cnn)
    with torch.no_grad():
        for p in broken.parameters():
            p.zero_()
    with pytest.raises(AssertionError, match=r"clean accuracy 0\.[01]\d+"):
        assert_accuracy(broken, test.x, test.y, min_accuracy=0.5)


def test_accuracy_on_a_pt2_path(audit_files, digits_split) -> None:
    model, _ = audit_files
    _, test = digits_split
    assert assert_accuracy(model, test.x[:100], test.y[:100], min_accuracy=0.9) > 0.9


def test_robust_pass_and_fail_with_messages(digits_cnn: Classifier, digits_split) -> None:
    _, test = digits_split
    x, y = test.x[:64], test.y[:64]
    result = assert_robust(digits_cnn, x, y, eps=0.01, min_robust_accuracy=0.5, steps=5)
    assert result.robust_accuracy >= 0.5
    assert result.x_adv.shape == x.shape
    with pytest.raises(AssertionError) as err:
        assert_robust(digits_cnn, x, y, eps=0.3, min_robust_accuracy=0.5, steps=10, seed=3)
    msg = str(err.value)
    assert "under pgd (linf, eps=0.3, 10 steps, seed=3) on 64 samples" in msg
    assert "below the required 0.5000" in msg
    measured = float(msg.split("robust accuracy ")[1].split()[0])
    assert measured < 0.5


def test_robust_is_deterministic_and_fgsm_is_weaker(digits_cnn: Classifier, digits_split) -> None:
    _, test = digits_split
    x, y = test.x[:64], test.y[:64]
    a = assert_robust(digits_cnn, x, y, eps=0.1, min_robust_accuracy=0.0, steps=10, seed=1)
    b = assert_robust(digits_cnn, x, y, eps=0.1, min_robust_accuracy=0.0, steps=10, seed=1)
    assert torch.equal(a.x_adv, b.x_adv)
    fgsm = assert_robust(digits_cnn, x, y, eps=0.1, min_robust_accuracy=0.0, attack="fgsm")
    assert fgsm.robust_accuracy >= a.robust_accuracy
    assert (fgsm.x_adv - x).abs().max() <= 0.1 + 1e-6


def test_robust_rejects_bad_parameters(digits_cnn: Classifier, digits_split) -> None:
    _, test = digits_split
    with pytest.raises(ParameterError, match="attack must be one of"):
        assert_robust(
            digits_cnn, test.x[:4], test.y[:4], eps=0.1, min_robust_accuracy=0.1, attack="nope"
        )
    with pytest.raises(ParameterError, match="min_robust_accuracy"):
        assert_robust(digits_cnn, test.x[:4], test.y[:4], eps=0.1, min_robust_accuracy=-0.1)


class _Exploit:
    def __reduce__(self):  # noqa: ANN204 - builds a malicious pickle, never loaded
        import os

        return (os.system, ("echo pwned",))


def test_scan_safe_passes_on_a_clean_file_and_fails_on_a_malicious_pickle(
    audit_files, tmp_path: Path
) -> None:
    model, data = audit_files
    result = assert_scan_safe(model)
    assert result.verdict.value == "safe"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(AssertionError) as err:
        assert_scan_safe(bad)
    msg = str(err.value)
    assert "scan verdict 'unsafe' (evil.pkl: unsafe)" in msg
    assert "required every file below 'suspicious'" in msg
    assert "os" in msg and "system" in msg
    # a threshold above the verdict lets it through only when asked explicitly
    with pytest.raises(AssertionError):
        assert_scan_safe([model, bad], fail_on="unsafe")
    with pytest.raises(ParameterError, match="fail_on"):
        assert_scan_safe(model, fail_on="sometimes")


def test_scan_safe_does_not_import_torch(audit_files, tmp_path: Path) -> None:
    import subprocess

    model, _ = audit_files
    code = (
        "import sys; from mlwarden.testing import assert_scan_safe; "
        f"r = assert_scan_safe({str(model)!r}); "
        "print(r.verdict.value, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["safe", "False"]


def test_loading_an_unsafe_model_path_is_refused(tmp_path: Path, digits_split) -> None:
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(_Exploit()))
    _, test = digits_split
    with pytest.raises(UnsafeArtefactError):
        assert_accuracy(bad, test.x[:4], test.y[:4], min_accuracy=0.0)


def test_membership_leak_passes_on_a_model_that_generalises(
    digits_cnn: Classifier, digits_split
) -> None:
    train, test = digits_split
    report = assert_no_membership_leak(digits_cnn, train.take(300), test.take(300), max_auc=0.6)
    auc = float(report.metrics["privacy.threshold.auc"])
    assert 0.4 < auc <= 0.6


def test_membership_leak_fails_on_a_memorising_model(digits_split, digits_spec) -> None:
    """An MLP trained for many epochs on 80 samples memorises them: the loss threshold
    attack separates members from non-members far better than chance."""
    from mlwarden.core.training import fit
    from mlwarden.models import MLP

    train, test = digits_split
    members, non_members = train.take(80), test.take(80)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), MLP(64, 10, (128,)))
    fit(module, members.x, members.y, epochs=150, lr=3e-3, batch_size=80, seed=0)
    model = Classifier(module, digits_spec)
    with pytest.raises(AssertionError) as err:
        assert_no_membership_leak(
            model, (members.x, members.y), (non_members.x, non_members.y), max_auc=0.6
        )
    msg = str(err.value)
    assert "membership leak: strongest attack threshold reaches AUC" in msg
    assert "(required <= 0.6000) on 80 members vs 80 non-members" in msg
    auc = float(msg.split("AUC ")[1].split()[0])
    assert auc > 0.6
    report = assert_no_membership_leak(model, members, non_members, max_auc=1.0)
    assert float(report.metrics["privacy.threshold.auc"]) == pytest.approx(auc, abs=1e-4)


def test_audit_passes_and_fails_on_a_real_config(audit_files, tmp_path: Path) -> None:
    model, data = audit_files
    cfg = {
        "model": {"path": str(model), "device": "cpu"},
        "data": {"source": str(data)},
        "checks": {"accuracy": {"min_accuracy": 0.5}, "scan": {}},
    }
    report = assert_audit_passes(cfg)
    assert [c.status for c in report.checks] == ["passed", "passed"]
    assert float(report.metrics["clean_accuracy"]) > 0.9
    assert not (tmp_path / "mlwarden-report").exists()  # write=False
    cfg["checks"] = {"accuracy": {"min_accuracy": 1.0}}
    assert_audit_passes(cfg, fail_on="high")  # MLW-ACC-001 is medium: below 'high'
    with pytest.raises(AssertionError) as err:
        assert_audit_passes(cfg, fail_on="medium")
    msg = str(err.value)
    assert "1 finding(s) at or above 'medium'" in msg
    assert "[medium] MLW-ACC-001 (accuracy)" in msg
    assert "clean accuracy 0.9" in msg and "< required 1.000" in msg


def test_audit_passes_from_a_toml_path(audit_files, tmp_path: Path) -> None:
    model, data = audit_files
    toml = tmp_path / "mlwarden.toml"
    toml.write_text(
        f'[model]\npath = "{model.as_posix()}"\n[data]\nsource = "{data.as_posix()}"\n'
        "[checks.accuracy]\nmin_accuracy = 0.99\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match="MLW-ACC-001"):
        assert_audit_passes(toml, fail_on="low", only=["accuracy"])
    with pytest.raises(ParameterError, match="fail_on"):
        assert_audit_passes(toml, fail_on="sometimes")


def test_no_backdoor_passes_on_a_clean_model_and_fails_past_the_threshold(
    digits_cnn: Classifier, digits_split
) -> None:
    """Neural Cleanse on the clean fixture passes the calibrated default, as `backdoor
    detect` grades it; the same (seeded) scan fails once a user threshold is set just under
    its top anomaly index. Detection of real BadNets models is tested in
    tests/defenses/detection."""
    from mlwarden.defenses.detection.calibration import assess
    from mlwarden.testing import assert_no_backdoor

    _, test = digits_split
    scans = assert_no_backdoor(digits_cnn, test.x, test.y, max_samples=200, seed=0)
    assert [s.method for s in scans] == ["neural_cleanse"]
    assert scans[0].threshold is None  # the calibrated cut, not the paper's index
    assert not assess(scans).detected
    top = scans[0].max_anomaly_index
    if top <= 0:  # degenerate: every class equal; nothing can be flagged
        pytest.skip("no class above the median")
    suspect = int(scans[0].classes[int(scans[0].anomaly_index.argmax())])
    threshold = max(top * 0.9, 0.05)
    with pytest.raises(AssertionError) as err:
        assert_no_backdoor(digits_cnn, test.x, test.y, max_samples=200, seed=0, threshold=threshold)
    msg = str(err.value)
    assert f"class '{suspect}' (index {suspect})" in msg
    assert f"neural_cleanse {top:.3f} > threshold {threshold:g}" in msg
    with pytest.raises(ParameterError, match="threshold"):
        assert_no_backdoor(digits_cnn, test.x, test.y, threshold=0)


def test_black_box_oracles_get_accuracy_but_not_gradient_attacks(
    digits_cnn: Classifier, digits_split
) -> None:
    from mlwarden.core.oracle import ClassifierOracle

    _, test = digits_split
    oracle = ClassifierOracle(digits_cnn)
    acc = assert_accuracy(oracle, test.x, test.y, min_accuracy=0.9)
    assert acc == pytest.approx(digits_cnn.accuracy(test.x, test.y), abs=1e-6)
    with pytest.raises(ParameterError, match="attack 'pgd' needs gradients"):
        assert_robust(oracle, test.x[:8], test.y[:8], eps=0.1, min_robust_accuracy=0.1)


def test_a_plain_module_with_a_partial_spec_needs_no_export(
    digits_cnn: Classifier, digits_split
) -> None:
    """The user's own nn.Module and the bounds they know: every helper runs on it directly,
    and measures the same as on the wrapped model."""
    from mlwarden.core import SpecOverride
    from mlwarden.testing import as_model

    _, test = digits_split
    x, y = test.x[:48], test.y[:48]
    module = copy.deepcopy(digits_cnn.module)
    spec = SpecOverride(shape=(1, 8, 8), bounds=(0.0, 1.0))
    model = as_model(module, spec=spec)
    assert isinstance(model, Classifier) and model.module is module and model.num_classes == 10
    accuracy = assert_accuracy(module, x.numpy(), y.numpy(), min_accuracy=0.5, spec=spec)
    assert accuracy == pytest.approx(digits_cnn.accuracy(x, y), abs=1e-6)
    robust = assert_robust(module, x, y, eps=0.01, min_robust_accuracy=0.3, steps=3, spec=spec)
    reference = assert_robust(digits_cnn, x, y, eps=0.01, min_robust_accuracy=0.3, steps=3)
    assert robust.robust_accuracy == pytest.approx(reference.robust_accuracy)
    with pytest.raises(ParameterError, match="SpecOverride"):
        assert_robust(module, x, y, eps=0.01, min_robust_accuracy=0.3)


def test_a_plain_torch_export_path_works_and_oracles_name_the_gap(
    digits_cnn: Classifier, digits_split, tmp_path: Path
) -> None:
    from mlwarden.core.oracle import ClassifierOracle
    from mlwarden.testing import assert_no_backdoor

    _, test = digits_split
    program = torch.export.export(
        copy.deepcopy(digits_cnn.module).eval(),
        (test.x[:4],),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    path = tmp_path / "plain.pt2"
    torch.export.save(program, str(path))
    accuracy = assert_accuracy(path, test.x[:64], test.y[:64], min_accuracy=0.5)
    assert accuracy == pytest.approx(digits_cnn.accuracy(test.x[:64], test.y[:64]), abs=1e-6)
    with pytest.raises(ParameterError, match="backdoor detection needs gradients; 'digits-cnn'"):
        assert_no_backdoor(ClassifierOracle(digits_cnn), test.x[:16], test.y[:16])
