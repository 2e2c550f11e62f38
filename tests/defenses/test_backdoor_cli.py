"""The ``mlwarden backdoor`` and ``mlwarden transfer`` commands, run as a user would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlwarden.cli.main import run


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory, badnets_model, digits_split):
    from mlwarden.io.export import save_pt2

    root = tmp_path_factory.mktemp("bkd")
    _, test = digits_split
    model = save_pt2(badnets_model.classifier, root / "teacher.pt2")
    np.savez(root / "clean.npz", x=test.x.numpy(), y=test.y.numpy())
    ones = test.y.numpy() == 1
    np.savez(root / "one_class.npz", x=test.x.numpy()[ones], y=test.y.numpy()[ones])
    np.savez(
        root / "wrong.npz", x=np.zeros((10, 30), dtype=np.float32), y=np.zeros(10, dtype=np.int64)
    )
    return root, model


def test_detect_flags_the_backdoored_teacher(files, capsys) -> None:
    root, model = files
    out = root / "report.json"
    code = _run(
        [
            "backdoor",
            "detect",
            "--model",
            str(model),
            "--data",
            str(root / "clean.npz"),
            "--samples",
            "300",
            "--steps",
            "300",
            "--no-progress",
            "-f",
            "json",
            "-o",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 1, "a HIGH finding fails the default --fail-on high"
    assert report["metrics"]["backdoor.target_class"] == 0
    html = root / "report.html"
    assert (
        _run(
            [
                "backdoor",
                "detect",
                "--model",
                str(model),
                "--data",
                str(root / "clean.npz"),
                "--samples",
                "100",
                "--steps",
                "30",
                "--method",
                "neural_cleanse",
                "--no-progress",
                "-f",
                "html",
                "-o",
                str(html),
                "--fail-on",
                "never",
            ]
        )
        == 0
    )
    assert "reverse-engineered mask" in html.read_text()


@pytest.mark.parametrize(
    ("data", "message"),
    [("one_class.npz", "single class"), ("wrong.npz", "shape")],
)
def test_detect_bad_data_is_one_clear_line(files, capsys, data, message) -> None:
    root, model = files
    code = _run(
        [
            "backdoor",
            "detect",
            "--model",
            str(model),
            "--data",
            str(root / data),
            "--steps",
            "5",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_scan_data_flags_override_the_settings(files) -> None:
    root, model = files
    out = root / "scan-data.json"
    argv = ["backdoor", "scan-data", "--model", str(model), "--data", str(root / "clean.npz")]
    flags = ["--method", "spectral_signatures", "--eps", "0.2", "-f", "json", "-o", str(out)]
    # clean held-out data: no outlier mass, so an info finding and the default --fail-on passes
    assert _run([*argv, *flags]) == 0
    report = json.loads(out.read_text())
    assert report["subject"]["method"] == "spectral_signatures"
    assert [(f["id"], f["severity"]) for f in report["findings"]] == [("MLW-BKD-012", "info")]
    assert report["metrics"]["backdoor_data.spectral_signatures.suspicious"] == 0


def test_scan_data_on_the_clean_digits_training_set_raises_nothing(
    tmp_path, digits_cnn, digits_split
) -> None:
    """Issue #21: the command a user runs, with its defaults, on the set the model was
    trained on."""
    from mlwarden.io.export import save_pt2

    train, _ = digits_split
    model = save_pt2(digits_cnn, tmp_path / "model.pt2")
    np.savez(tmp_path / "train.npz", x=train.x.numpy(), y=train.y.numpy())
    out = tmp_path / "scan.json"
    argv = ["backdoor", "scan-data", "--model", str(model), "--data", str(tmp_path / "train.npz")]
    assert _run([*argv, "--fail-on", "medium", "-f", "json", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(f["id"], f["severity"]) for f in report["findings"]] == [("MLW-BKD-012", "info")]
    table = next(t for t in report["tables"] if t["id"] == "backdoor-activation-clustering")
    assert len(table["rows"]) == 10 and not any(row[-1] for row in table["rows"])


def test_transfer_command_writes_student_and_audit(files) -> None:
    root, model = files
    out = root / "transfer.json"
    student = root / "student.pt2"
    code = _run(
        [
            "transfer",
            "--teacher",
            str(model),
            "--data",
            str(root / "clean.npz"),
            "--strategy",
            "linear_probe",
            "--epochs",
            "3",
            "--scan-steps",
            "40",
            "--student-out",
            str(student),
            "--no-progress",
            "-f",
            "json",
            "-o",
            str(out),
            "--fail-on",
            "never",
        ]
    )
    assert code == 0 and student.exists()
    report = json.loads(out.read_text())
    assert report["metrics"]["transfer.strategy"] == "linear_probe"
    assert report["metrics"]["transfer.weight_divergence"] > 0
    assert (
        _run(
            [
                "transfer",
                "--teacher",
                str(model),
                "--data",
                str(root / "clean.npz"),
                "--strategy",
                "bogus",
                "--no-progress",
            ]
        )
        == 2
    )


def test_audit_checks_backdoor_and_transfer(files) -> None:
    from mlwarden.audit.registry import AuditContext, available_checks

    root, model = files
    checks = available_checks()
    ctx = AuditContext(model_source=str(model), data_source=str(root / "clean.npz"), device="cpu")
    spec = checks["backdoor"]
    spec.run(ctx, spec.config(steps=150, samples=200))
    assert ctx.report.metrics["backdoor.detected"] == 1
    assert ctx.report.metrics["backdoor.target_class"] == 0
    spec = checks["transfer"]
    spec.run(ctx, spec.config(teacher=str(model), samples=200))
    # the model audited as its own student: same weights, same features, the trigger still works
    assert ctx.report.metrics["transfer.weight_divergence"] == 0.0
    assert ctx.report.metrics["transfer.trigger_source"].startswith("teacher scan")
    assert ctx.report.metrics["transfer.asr"] > 0.9
    assert ctx.report.metrics["transfer.excess_asr"] > 0.5, "above the clean reference's ASR"
    assert any(f.id == "MLW-BKD-030" for f in ctx.report.findings)


@pytest.fixture(scope="module")
def trigger_file(files, badnets_model):
    """The planted BadNets trigger as a user would hand it in: mask and pattern in an .npz."""
    root, _ = files
    spec = badnets_model.classifier.spec
    mask, pattern = badnets_model.attack.trigger.mask_and_pattern(spec.shape, spec.bounds)
    path = root / "trigger.npz"
    np.savez(path, mask=mask.numpy(), pattern=pattern.numpy())
    return path


def _transfer(root, model, *args: str) -> list[str]:
    return [
        "transfer",
        "--teacher",
        str(model),
        "--data",
        str(root / "clean.npz"),
        "--epochs",
        "1",
        "--samples",
        "80",
        "--no-progress",
        "--fail-on",
        "never",
        *args,
    ]


def test_transfer_compare_with_a_given_trigger_prints_the_filled_table(
    files, trigger_file, cli, monkeypatch
) -> None:
    from mlwarden.cli.ui import console

    monkeypatch.setattr(console, "width", 200)  # a wide terminal: headers on one line
    root, model = files
    result = cli(
        *_transfer(root, model, "--strategy", "compare", "--trigger", str(trigger_file)),
        "--target",
        "0",
    )
    assert result.code == 0, result.err
    out = " ".join(result.out.split())
    assert "Student strategies compared" in out, "the table is printed, not only the report"
    for column in ("backdoor ASR", "baseline ASR", "excess ASR", "adversarial transfer"):
        assert column in out
    assert "not measured" not in out and "reference (from scratch)" in out
    assert "MLW-BKD-030" in out, "one epoch of a linear probe keeps the planted backdoor"


def test_transfer_refuses_a_bad_trigger_file_in_one_line(files, trigger_file, cli) -> None:
    root, model = files
    wrong = root / "wrong-trigger.npz"
    np.savez(wrong, mask=np.ones((1, 8, 8), "f4"), pattern=np.zeros((3, 8, 8), "f4"))
    cases = {
        ("--trigger", str(root / "missing.npz"), "--target", "0"): "not found",
        ("--trigger", str(wrong), "--target", "0"): "trigger pattern has shape (3, 8, 8)",
        ("--trigger", str(root / "clean.npz"), "--target", "0"): "lacks array(s) mask, pattern",
        ("--trigger", str(trigger_file), "--target", "12"): "target must be a class",
        ("--trigger", str(trigger_file)): "--trigger and --target go together",
    }
    for args, message in cases.items():
        result = cli(*_transfer(root, model, "--strategy", "linear_probe", *args))
        assert result.code == 2, (args, result.out)
        assert message in result.err and "Traceback" not in result.err, result.err
