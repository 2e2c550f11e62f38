"""One front door per capability: the command and its audit check give the same results.

For the same settings, ``mlwarden backdoor detect`` / ``mlwarden transfer`` and ``mlwarden
audit`` with the matching ``[checks.X]`` table run one runner, so they must produce the
same findings (ids, severities) and the same metrics. Budgets are tiny: parity, not
detection quality, is under test. Also here: requirements go through the model contract
(a score oracle is refused with one line by the command and skipped by the check), and
flags are validated by the settings model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BACKDOOR = {"steps": 20, "samples": 80}
TRANSFER = {"scan_steps": 10, "samples": 60}


@pytest.fixture(scope="module")
def files(tmp_path_factory, badnets_model, digits_cnn, digits_split) -> dict[str, Path]:
    from mlwarden.io.export import export_onnx, save_pt2

    root = tmp_path_factory.mktemp("front-door")
    _, test = digits_split
    np.savez(root / "clean.npz", x=test.x.numpy(), y=test.y.numpy())
    return {
        "root": root,
        "data": root / "clean.npz",
        "teacher": save_pt2(badnets_model.classifier, root / "teacher.pt2"),
        "student": save_pt2(digits_cnn, root / "student.pt2"),  # same architecture
        "oracle": export_onnx(digits_cnn, root / "model.onnx"),
    }


def _flags(settings: dict[str, Any]) -> list[str]:
    return [
        arg for key, value in settings.items() for arg in (f"--{key.replace('_', '-')}", str(value))
    ]


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # numbers and strings: JSON literals are valid TOML


def _command(cli, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "command.json"
    result = cli(
        *args,
        "--device",
        "cpu",
        "--no-progress",
        "-f",
        "json",
        "-o",
        str(out),
        "--fail-on",
        "never",
    )
    assert result.code == 0, result.err
    return json.loads(out.read_text())


def _audit(cli, tmp_path: Path, model: Path, data: Path, check: str, table: dict[str, Any]):
    out = tmp_path / "audit"
    lines = [
        "[model]",
        f"path = {_toml_value(str(model))}",
        'device = "cpu"',
        "[data]",
        f"source = {_toml_value(str(data))}",
        "[audit]",
        'formats = ["json"]',
        f"output_dir = {_toml_value(str(out))}",
        'fail_on = "never"',
        f"[checks.{check}]",
        *(f"{key} = {_toml_value(value)}" for key, value in table.items()),
    ]
    config = tmp_path / "mlwarden.toml"
    config.write_text("\n".join(lines) + "\n")
    result = cli("audit", "--config", str(config), "--no-progress")
    assert result.code == 0, result.err
    return json.loads((out / "report.json").read_text())


def _results(report: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Findings as (id, severity) and metrics, without wall-clock times."""
    findings = sorted((f["id"], f["severity"]) for f in report["findings"])
    metrics = {k: v for k, v in report["metrics"].items() if not k.endswith(".seconds")}
    return findings, metrics


def test_backdoor_detect_and_audit_check_agree(cli, files, tmp_path) -> None:
    command = _command(
        cli,
        tmp_path,
        "backdoor",
        "detect",
        "--model",
        str(files["teacher"]),
        "--data",
        str(files["data"]),
        *_flags(BACKDOOR),
    )
    audit = _audit(cli, tmp_path, files["teacher"], files["data"], "backdoor", BACKDOOR)
    assert audit["checks"][0]["status"] == "passed"
    findings, metrics = _results(command)
    assert {
        "backdoor.detected",
        "backdoor.anomaly_index",
        "backdoor.neural_cleanse.anomaly_index",
    } <= set(metrics)
    assert any(fid.startswith("MLW-BKD-00") for fid, _ in findings)
    assert _results(audit) == (findings, metrics)


def test_transfer_training_a_student_agrees_with_the_audit_check(cli, files, tmp_path) -> None:
    settings = {"strategy": "linear_probe", "epochs": 1, **TRANSFER}
    command = _command(
        cli,
        tmp_path,
        "transfer",
        "--teacher",
        str(files["teacher"]),
        "--data",
        str(files["data"]),
        *_flags(settings),
    )
    # no teacher key: the model under audit is the teacher, a student is trained from it
    audit = _audit(cli, tmp_path, files["teacher"], files["data"], "transfer", settings)
    findings, metrics = _results(command)
    assert metrics["transfer.strategy"] == "linear_probe"
    assert metrics["transfer.weight_divergence"] > 0
    assert "MLW-BKD-032" in {fid for fid, _ in findings}
    assert _results(audit) == (findings, metrics)
    subject = command["subject"]
    assert subject["train_samples"] + subject["test_samples"] == len(np.load(files["data"])["y"])
    assert subject["test_samples"] == pytest.approx(0.25 * subject["train_samples"] / 0.75, abs=5)


def test_transfer_of_a_given_student_agrees_with_the_audit_check(cli, files, tmp_path) -> None:
    command = _command(
        cli,
        tmp_path,
        "transfer",
        "--teacher",
        str(files["teacher"]),
        "--student",
        str(files["student"]),
        "--data",
        str(files["data"]),
        *_flags(TRANSFER),
    )
    # teacher key: the model under audit is the student of that teacher
    table = {"teacher": str(files["teacher"]), **TRANSFER}
    audit = _audit(cli, tmp_path, files["student"], files["data"], "transfer", table)
    findings, metrics = _results(command)
    assert "transfer.strategy" not in metrics, "nothing was trained"
    assert metrics["transfer.weight_divergence"] > 0, "two independently trained models"
    assert _results(audit) == (findings, metrics)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["backdoor", "detect", "--model"],
            "Neural Cleanse needs gradients; 'model.onnx' is a score oracle",
        ),
        (["backdoor", "scan-data", "--model"], "activation clustering needs hidden features"),
        (["transfer", "--teacher"], "fine-tuning a student needs trainable weights"),
    ],
)
def test_a_score_oracle_is_refused_through_the_contract(cli, files, argv, message) -> None:
    result = cli(*argv, str(files["oracle"]), "--data", str(files["data"]))
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_audit_checks_skip_a_score_oracle_with_the_contract_reason(cli, files, tmp_path) -> None:
    from mlwarden.audit.registry import AuditContext, CheckSkipped, available_checks

    checks = available_checks()
    ctx = AuditContext(model_source=str(files["oracle"]), data_source=str(files["data"]))
    with pytest.raises(CheckSkipped, match="Neural Cleanse needs gradients; 'model.onnx'"):
        checks["backdoor"].run(ctx, checks["backdoor"].config())
    with pytest.raises(CheckSkipped, match="the transfer audit needs .*'model.onnx'.*student"):
        spec = checks["transfer"]
        spec.run(ctx, spec.config(teacher=str(files["teacher"])))
    ctx = AuditContext(model_source=str(files["student"]), data_source=str(files["data"]))
    with pytest.raises(CheckSkipped, match="the transfer audit needs gradients.*teacher"):
        spec.run(ctx, spec.config(teacher=str(files["oracle"])))
    assert not ctx.report.findings, "nothing ran"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backdoor", "detect", "--threshold", "0"], "--threshold: Input should be greater than 0"),
        (["backdoor", "detect", "--method", "strip"], "--method: unknown detection method 'strip'"),
        (["backdoor", "scan-data", "--eps", "1.5"], "--eps: Input should be less than 1"),
        (["transfer", "--test-fraction", "1"], "--test-fraction: Input should be less than 1"),
        (["transfer", "--strategy", "bogus"], "--strategy: must be one of linear_probe"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(cli, files, argv, message) -> None:
    flag = "--teacher" if argv[0] == "transfer" else "--model"
    result = cli(*argv, flag, str(files["teacher"]), "--data", str(files["data"]))
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_a_given_student_refuses_training_settings(cli, files) -> None:
    result = cli(
        "transfer",
        "--teacher",
        str(files["teacher"]),
        "--student",
        str(files["student"]),
        "--data",
        str(files["data"]),
        "--epochs",
        "3",
        "--no-progress",
    )
    assert result.code == 2 and "epochs shape(s) the training of a student" in result.err
    result = cli(
        "transfer",
        "--teacher",
        str(files["teacher"]),
        "--student",
        str(files["student"]),
        "--data",
        str(files["data"]),
        "--student-out",
        "x.pt2",
        "--no-progress",
    )
    assert result.code == 2 and "--student-out" in result.err


def test_settings_keep_the_older_max_samples_key() -> None:
    from mlwarden.defenses.detection.model_scan import BackdoorSettings
    from mlwarden.evaluation.transfer import TransferCheck

    assert BackdoorSettings.model_validate({"max_samples": 42}).samples == 42
    assert TransferCheck.model_validate({"max_samples": 42}).samples == 42
    assert BackdoorSettings().samples == 500 and TransferCheck().samples == 400
