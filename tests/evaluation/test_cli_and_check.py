"""``mlwarden attack evasion``, ``mlwarden evaluate robustness`` and the audit check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mlwarden.audit.registry import AuditContext, available_checks
from mlwarden.core import Classifier, Severity
from mlwarden.evaluation.checks import evasion_check
from mlwarden.evaluation.evasion import RobustnessSettings


def test_attack_evasion_writes_npz_and_report(
    cli, digits_cnn_pt2: Path, tmp_path: Path
) -> None:
    npz = tmp_path / "adv.npz"
    res = cli(
        "attack",
        "evasion",
        "--model",
        str(digits_cnn_pt2),
        "--data",
        "digits",
        "--samples",
        "40",
        "--attack",
        "pgd",
        "--eps",
        "0.15",
        "--steps",
        "5",
        "--output-npz",
        str(npz),
        "--format",
        "json",
        "--fail-on",
        "never",
        "--no-progress",
    )
    assert res.code == 0, res.err
    report = json.loads(res.out)
    acc = report["metrics"]["evasion.pgd.linf.robust_accuracy@0.15"]
    with np.load(npz) as arrays:
        assert set(arrays.files) == {"x_adv", "y", "success", "clean_correct"}
        x_adv, success, clean = arrays["x_adv"], arrays["success"], arrays["clean_correct"]
    assert x_adv.shape == (40, 1, 8, 8) and success.dtype == np.bool_
    assert acc == pytest.approx(float(np.mean(clean & ~success)), abs=1e-6)
    from mlwarden.io.dataset import load_builtin

    clean_x = load_builtin("digits").x[:40].numpy()
    assert float(np.abs(x_adv - clean_x).max()) <= 0.15 + 1e-5
    assert report["artefacts"][0]["path"] == str(npz)


def test_attack_evasion_fails_on_low_robust_accuracy(cli, digits_cnn_pt2: Path) -> None:
    res = cli(
        "attack",
        "evasion",
        "-m",
        str(digits_cnn_pt2),
        "-d",
        "digits",
        "--samples",
        "30",
        "--attack",
        "fgsm",
        "--eps",
        "0.3",
        "--min-robust-accuracy",
        "0.9",
        "--format",
        "json",
        "--no-progress",
    )
    assert res.code == 1
    assert "MLW-EVA-010" in {f["id"] for f in json.loads(res.out)["findings"]}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--attack", "jsma"], "attack"),
        (["--eps", "-1"], "eps"),
        (["--norm", "l1"], "norm"),
        (["--fail-on", "loud"], "fail-on"),
    ],
)
def test_attack_evasion_usage_errors_exit_2(cli, digits_cnn_pt2: Path, args, needle) -> None:
    res = cli("attack", "evasion", "-m", str(digits_cnn_pt2), "-d", "digits", *args)
    assert res.code == 2
    assert needle in res.err and "Traceback" not in res.err


def test_evaluate_robustness_cli(cli, digits_cnn_pt2: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = cli(
        "evaluate",
        "robustness",
        "-m",
        str(digits_cnn_pt2),
        "-d",
        "digits",
        "--samples",
        "30",
        "--preset",
        "fast",
        "--steps",
        "5",
        "--eps",
        "0.05",
        "--eps",
        "0.2",
        "--format",
        "json",
        "--output",
        str(out),
        "--min-robust-accuracy",
        "0.95",
        "--no-progress",
    )
    assert res.code == 1  # HIGH finding at the default --fail-on high
    report = json.loads(out.read_text())
    assert (
        report["metrics"]["evasion.fast.linf.robust_accuracy@0.05"]
        >= report["metrics"]["evasion.fast.linf.robust_accuracy@0.2"]
    )
    assert report["figures"][0]["kind"] == "line"
    bad = cli(
        "evaluate", "robustness", "-m", str(digits_cnn_pt2), "-d", "digits", "--preset", "heavy"
    )
    assert bad.code == 2 and "preset" in bad.err


def test_audit_check_registered_and_configured(digits_cnn_pt2: Path, tmp_path: Path) -> None:
    assert "evasion" in available_checks()
    with pytest.raises(ValidationError, match="epss"):
        RobustnessSettings(epss=[0.1])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RobustnessSettings(eps=[])
    ctx = AuditContext(
        model_source=str(digits_cnn_pt2), data_source="digits", data_limit=40, output_dir=tmp_path
    )
    cfg = RobustnessSettings(preset="pgd", eps=[0.05, 0.2], steps=5, min_robust_accuracy=0.9)
    evasion_check(ctx, cfg)
    report = ctx.report
    assert "evasion.pgd.linf.robust_accuracy@0.2" in report.metrics
    high = [f for f in report.findings if f.severity is Severity.HIGH]
    assert [f.id for f in high] == ["MLW-EVA-010"]


def test_hopskipjump_through_the_attack_command(cli, digits_cnn_pt2: Path, tmp_path: Path) -> None:
    npz = tmp_path / "hsj.npz"
    res = cli(
        "attack", "evasion", "-m", str(digits_cnn_pt2), "-d", "digits", "--samples", "8",
        "--attack", "hopskipjump", "--norm", "l2", "--eps", "1.5", "--queries", "150",
        "--steps", "5", "--output-npz", str(npz), "--format", "json", "--fail-on", "never",
        "--no-progress",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    m = report["metrics"]
    assert report["subject"]["attack"] == "hopskipjump"
    assert report["subject"]["params"]["queries"] == 150
    assert m["evasion.hopskipjump.l2.queries"] > 0
    assert m["evasion.hopskipjump.l2.gradient_evaluations"] == 0
    with np.load(npz) as arrays:
        x_adv, success, clean = arrays["x_adv"], arrays["success"], arrays["clean_correct"]
    assert m["evasion.hopskipjump.l2.robust_accuracy@1.5"] == pytest.approx(
        float(np.mean(clean & ~success)), abs=1e-6
    )
    from mlwarden.io.dataset import load_builtin

    x = load_builtin("digits").x[:8].numpy()
    fooled = success & clean
    assert fooled.any()
    norms = np.linalg.norm((x_adv - x).reshape(8, -1), axis=1)
    assert float(norms[fooled].max()) <= 1.5 + 1e-4
    assert float(norms[~success].max()) == 0.0  # outside eps: returned unperturbed


def test_label_preset_through_the_robustness_command(cli, digits_cnn_pt2: Path) -> None:
    res = cli(
        "evaluate", "robustness", "-m", str(digits_cnn_pt2), "-d", "digits", "--samples", "8",
        "--preset", "labels", "--norm", "l2", "--eps", "1.0", "--queries", "100",
        "--format", "json", "--fail-on", "never", "--no-progress",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    cost = next(t for t in report["tables"] if t["id"] == "evasion-cost-labels-l2")
    assert [row[0] for row in cost["rows"]] == ["hopskipjump"]
    assert report["metrics"]["evasion.labels.l2.queries"] > 0


def test_defaults_come_from_the_settings_models(cli) -> None:
    from mlwarden.evaluation.evasion import DEFAULT_MIN_ROBUST_ACCURACY

    def help_of(*command: str) -> str:
        res = cli(*command, "--help")
        assert res.code == 0
        return " ".join(res.out.replace("\u2502", " ").split())  # without the box borders

    text = help_of("evaluate", "robustness")
    assert "[default: (standard)]" in text and "[default: (0.03 0.1)]" in text
    assert f"[default: ({DEFAULT_MIN_ROBUST_ACCURACY})]" in text
    assert RobustnessSettings().preset == "standard"
    assert RobustnessSettings().min_robust_accuracy == DEFAULT_MIN_ROBUST_ACCURACY
    attack = help_of("attack", "evasion")
    assert "hopskipjump: black-box, label queries only" in attack
    assert f"[default: ({DEFAULT_MIN_ROBUST_ACCURACY})]" in attack


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--preset", "heavy"], "--preset: Input should be 'pgd', 'fast', 'standard'"),
        (["--eps", "-0.1"], "--eps: Input should be greater than or equal to 0"),
        (["--min-robust-accuracy", "2"], "--min-robust-accuracy: Input should be less than"),
        (["--samples", "0"], "--samples: Input should be greater than or equal to 1"),
    ],
)
def test_robustness_usage_errors_name_the_flag(cli, digits_cnn_pt2: Path, args, needle) -> None:
    res = cli("evaluate", "robustness", "-m", str(digits_cnn_pt2), "-d", "digits", *args)
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err


def test_check_skips_a_preset_the_model_cannot_serve(digits_cnn: Classifier) -> None:
    from mlwarden.audit.registry import CheckSkipped
    from mlwarden.core.oracle import ClassifierOracle

    labels = ClassifierOracle(digits_cnn, output="labels")
    ctx = AuditContext(data_source="digits", data_limit=8, _oracle=labels)
    with pytest.raises(CheckSkipped) as exc:
        evasion_check(ctx, RobustnessSettings())
    assert str(exc.value) == (
        "preset 'standard' needs gradients, class scores; 'digits-cnn' is a label-only oracle "
        "(presets that work on it: labels)"
    )
    cfg = RobustnessSettings(preset="labels", norm="l2", eps=[1.0], queries=60, steps=3)
    evasion_check(ctx, cfg)
    assert ctx.report.metrics["evasion.labels.l2.samples"] == 8
    assert ctx.report.metrics["evasion.labels.l2.queries"] > 0
    with pytest.raises(CheckSkipped, match="sanity check needs gradients; .* a label-only oracle"):
        evasion_check(ctx, RobustnessSettings(preset="labels", sanity=True))


def test_runners_state_what_the_loader_assumed(digits_cnn: Classifier, digits_split) -> None:
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.evasion import (
        EvasionSettings,
        RobustnessSettings,
        run_evasion,
        run_robustness,
    )

    _, test = digits_split
    assumed = Classifier(
        digits_cnn.module,
        digits_cnn.spec,
        name="plain.pt2",
        spec_assumptions=("value bounds assumed to be [0, 1]",),
    )
    report = Report()
    settings = RobustnessSettings(preset="pgd", eps=[0.1], steps=2, samples=10)
    result = run_robustness(assumed, test, settings, report)
    assert len(result.y) == 10
    run_evasion(assumed, test, EvasionSettings(attack="fgsm", samples=10), report)
    notes = [f for f in report.findings if f.id == "MLW-SPEC-001"]
    assert len(notes) == 1 and "value bounds assumed" in notes[0].detail
    assert notes[0].check == "evasion"
    plain = Report()
    run_robustness(digits_cnn, test, settings, plain)
    assert "MLW-SPEC-001" not in {f.id for f in plain.findings}
