"""A report produced by a real check on a real trained model renders in every format."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch

from mlwarden.audit.builtin_checks import AccuracyCheck, accuracy_check
from mlwarden.audit.registry import AuditContext
from mlwarden.core import Classifier
from mlwarden.core.findings import CheckResult, Report
from mlwarden.core.training import fit
from mlwarden.report import FORMATS, render, write_report
from mlwarden.report.reader import read_report


@pytest.fixture(scope="module")
def digits_linear(digits_split, digits_spec) -> Classifier:
    """A softmax regression on digits (~95% accuracy), trained in well under a second.

    Trained here with one torch thread rather than taken from the shared ``digits_mlp``
    fixture: on the shared 2-core machine two threads made that fixture take 70-120 s
    (thread oversubscription), one thread trains it in ~2 s. Renderers need a real
    model's report, not a particular model.
    """
    train, _ = digits_split
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        fit(module, train.x, train.y, epochs=20, lr=1e-2, batch_size=64, seed=0)
    finally:
        torch.set_num_threads(threads)
    return Classifier(module, digits_spec, name="digits-linear")


def test_accuracy_check_report_renders_everywhere(digits_linear, digits_split, tmp_path) -> None:
    _, test = digits_split
    report = Report(
        title="digits-linear accuracy",
        subject={"model": "models/digits_linear.pt2", "data": "builtin:digits"},
    )
    report.fail_on = "medium"  # the check's medium finding fails it, whatever status is stored
    ctx = AuditContext(report=report, _classifier=digits_linear, _data=test)
    # a threshold the model cannot meet, so that the check emits a real finding
    accuracy_check(ctx, AccuracyCheck(min_accuracy=0.999))
    report.checks.append(
        CheckResult(
            name="accuracy", status="passed", duration_s=0.1, summary="clean accuracy below 99.9%"
        )
    )
    acc = report.metrics["clean_accuracy"]
    assert 0.9 < acc < 0.999 and report.findings[0].id == "MLW-ACC-001"

    texts = {fmt: render(report, fmt) for fmt in FORMATS}
    assert f"{acc * 100:.1f}%" in texts["md"] and f"{acc * 100:.1f}%" in texts["html"]
    assert "Clean accuracy per class" in texts["md"] and "Clean accuracy per class" in texts["html"]
    sarif = json.loads(texts["sarif"])
    result = sarif["runs"][0]["results"][0]
    assert result["ruleId"] == "MLW-ACC-001" and result["level"] == "warning"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "models/digits_linear.pt2"
    )
    suite = ET.fromstring(texts["junit"]).find("testsuite")
    assert suite.get("failures") == "1"
    assert "MLW-ACC-001" in suite.find("testcase").find("failure").text

    # the saved JSON re-renders to the same outputs
    path = write_report(report, tmp_path / "report.json")
    again = read_report(path)
    assert render(again, "md") == texts["md"]
