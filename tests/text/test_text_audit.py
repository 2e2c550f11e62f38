"""`mlwarden audit` on a Hugging Face folder with text data: the checks that apply run (the
backdoor check too, with the text classifier's trigger search), a check the model cannot
serve is skipped (never passed), the HTML report renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def audited(tmp_path_factory, cli, text_victim_path, text_splits, plot_queries_jsonl, minilm_path):
    folder = tmp_path_factory.mktemp("text-audit")
    (folder / "mlwarden.toml").write_text(
        f"""
[model]
path = "{text_victim_path}"
[data]
source = "{text_splits["non_members"]}"
limit = 24
[audit]
output_dir = "report"
formats = ["html", "json"]
[checks.accuracy]
[checks.scan]
[checks.privacy]
members = "{text_splits["members"]}"
samples = 24
shadow_models = 4
[checks.extraction]
budget = 32
queries = "{plot_queries_jsonl}"
encoder = "{minilm_path}"
[checks.evasion]
[checks.backdoor]
samples = 40
""",
        encoding="utf-8",
    )
    result = cli("audit", "--config", str(folder / "mlwarden.toml"))
    report = json.loads((folder / "report" / "report.json").read_text(encoding="utf-8"))
    return result, report, folder / "report"


@pytest.fixture(scope="module")
def cli(request):
    """A module-scoped in-process ``mlwarden`` (the audit runs once for every test here)."""
    from mlwarden.cli.main import run

    def invoke(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            run(list(args))
        return exc.value.code if isinstance(exc.value.code, int) else 0

    return invoke


def test_audit_of_a_text_model_runs_the_checks_that_apply(audited) -> None:
    code, report, _ = audited
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert set(status) == {"accuracy", "scan", "privacy", "extraction", "evasion", "backdoor"}
    assert status["accuracy"] == status["scan"] == "passed"
    # The overfit victim leaks membership at the default limits: the audit fails on it.
    assert status["privacy"] == "failed" and code == 1
    assert status["extraction"] in ("passed", "failed")
    # text evasion runs (the `text` preset) on the audit's 24 sentences
    assert status["evasion"] in ("passed", "failed")
    assert report["metrics"]["evasion.text.samples"] == 24
    assert 0 <= report["metrics"]["evasion.text.robust_accuracy"] <= 1
    assert report["metrics"]["samples"] == 24
    assert report["metrics"]["extraction.natural.scores.queries"] == 32
    assert report["metrics"]["privacy.threshold.auc"] > 0.6
    assert "privacy.lira-offline.auc" in report["metrics"]


def test_backdoor_check_runs_the_text_classifier_trigger_search(audited) -> None:
    _, report, _ = audited
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["backdoor"]["status"] in ("passed", "failed")
    assert report["metrics"]["backdoor.detected"] in (0, 1)
    assert {"backdoor.flip_rate.negative", "backdoor.flip_rate.positive"} <= set(
        report["metrics"]
    )
    ids = {f["id"] for f in report["findings"] if f["check"] == "backdoor"}
    assert ids & {"MLW-BKD-040", "MLW-BKD-041", "MLW-BKD-042"}


def test_html_report_of_a_text_audit_names_texts(audited) -> None:
    _, report, folder = audited
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "Flip rate of verified trigger candidates per target class" in html
    exposed = next(t for t in report["tables"] if t["id"] == "membership-exposed")
    assert exposed["columns"][-1] == "text" and all(isinstance(r[-1], str) for r in exposed["rows"])
    thief = next(t for t in report["tables"] if t["id"] == "extraction-text-thief")
    assert thief["rows"][0][1].endswith("from the thief's own texts")


def test_default_audit_of_a_text_model(tmp_path: Path, cli, text_victim_path, text_splits) -> None:
    out = tmp_path / "report"
    code = cli(
        "audit",
        "--model",
        str(text_victim_path),
        "--data",
        str(text_splits["non_members"]),
        "--limit",
        "16",
        "-o",
        str(out),
        "-f",
        "json",
    )
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    status = {c["name"]: c["status"] for c in report["checks"]}
    # the default checks all run on a text model; evasion with the `text` preset
    assert set(status) == {"accuracy", "scan", "evasion"} and "skipped" not in status.values()
    assert status["accuracy"] == status["scan"] == "passed"
    assert code == (1 if status["evasion"] == "failed" else 0)
    assert report["metrics"]["evasion.text.samples"] == 16


def test_an_audit_where_no_check_ran_does_not_pass(
    tmp_path: Path, cli, minilm_path, text_splits
) -> None:
    from mlwarden.core.findings import Report
    from mlwarden.core.verdict import report_verdict

    out = tmp_path / "report"
    code = cli(
        "audit",
        "--model",
        str(minilm_path),  # an encoder scores no classes: the accuracy check is skipped
        "--data",
        str(text_splits["non_members"]),
        "--check",
        "accuracy",
        "-o",
        str(out),
        "-f",
        "json",
    )
    report = Report.model_validate_json((out / "report.json").read_text(encoding="utf-8"))
    verdict = report_verdict(report)
    assert code == 1 and not verdict.passed  # fail closed: a skipped check proved nothing
    assert "none of the 1 checks ran" in verdict.line()
