"""`mlwarden demo --text` on a fresh install: the packaged MiniLM scanned, a student fine-tuned
on real review sentences, saved as a folder transformers loads, audited, reported."""

from __future__ import annotations

import json

import pytest

import mlwarden.audit.runner
import mlwarden.demo_text
from mlwarden.cli.main import run


@pytest.mark.slow
def test_text_demo_end_to_end(tmp_path, monkeypatch, capsys, minilm_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh user cache
    audits: list = []
    real_audit = mlwarden.audit.runner.run_audit

    def recorded(*args, **kwargs):
        audits.append(real_audit(*args, **kwargs))
        return audits[-1]

    monkeypatch.setattr(mlwarden.audit.runner, "run_audit", recorded)
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exc:
        run(["demo", "--text", "--output", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    last = printed.strip().splitlines()[-1]
    assert last.startswith("verdict: "), printed
    assert exc.value.code == (0 if last.startswith("verdict: PASSED") else 1)
    report = json.loads((out / "report.json").read_text())
    status = {c["name"]: c["status"] for c in report["checks"]}
    # every check ran on the text model: none is skipped as not applicable
    expected = {"accuracy", "scan", "transfer", "privacy", "extraction", "evasion", "risk"}
    assert set(status) == expected, status
    assert "skipped" not in status.values(), status
    assert status["scan"] == "passed" and status["accuracy"] == "passed"
    metrics = report["metrics"]
    assert metrics["clean_accuracy"] >= 0.7  # real sentiment learned from 600 sentences
    assert metrics["samples"] == 300
    # the transfer audit measured how far the student moved from the teacher
    assert 0 < metrics["transfer.weight_divergence"] and 0 < metrics["transfer.feature_divergence"]
    assert "privacy.threshold.auc" in metrics and "evasion.text.robust_accuracy" in metrics
    # the saved student is a Hugging Face folder that transformers itself loads back
    from transformers import AutoModelForSequenceClassification

    student = out / "models" / "student"
    assert (student / "model.safetensors").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(student, local_files_only=True)
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script src=" not in html

    # A second run reuses the cached student: no training (its audit, the same as above, is
    # not run again here; the first one is handed back).
    def no_training(*_args, **_kwargs):
        raise AssertionError("the cached student was trained again")

    monkeypatch.setattr(mlwarden.demo_text, "_train_student", no_training)
    monkeypatch.setattr(mlwarden.audit.runner, "run_audit", lambda *a, **k: audits[0])
    with pytest.raises(SystemExit):
        run(["demo", "--text", "--output", str(out), "--no-progress"])
    assert "loaded from cache" in capsys.readouterr().out
    assert (out / "models" / "student" / "model.safetensors").is_file()
