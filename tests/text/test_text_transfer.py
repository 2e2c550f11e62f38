"""Students of a pretrained text teacher (MiniLM) on real reviews: strategies, saving, audit.

CI-sized: the linear probe (a convex fit on embeddings computed once) is shared per session
(`probe_student`, `student_folder` in conftest); the fine-tuning strategies run one epoch on
32 reviews, enough to check what they train and what they leave alone, not their accuracy.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

from mlwarden.core.errors import DataError, ModelLoadError, ParameterError
from mlwarden.core.findings import Report
from mlwarden.evaluation.transfer import TransferSettings, run_transfer
from mlwarden.io.hf import SPEC_FILE
from mlwarden.io.text_data import TextDataset

SAMPLE = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish.",
    "an utterly charming and hilarious film that reminded me why i love movies.",
    "it's a long, slow slog.",
]


@pytest.fixture(autouse=True)
def _small_teacher_scan(monkeypatch):
    """Without a given trigger the audit scans an encoder teacher (the scan of `backdoor
    detect`); here at a test's budget (its defaults: benchmarks/encoder_backdoor_zoo.py)."""
    from mlwarden.defenses.detection import encoder_scan
    from mlwarden.defenses.detection.trigger_search import TriggerSearch

    small = functools.partial(
        TriggerSearch,
        rounds=1,
        candidates=4,
        max_tokens=1,
        extend_from=1,
        null_tokens=8,
    )  # the default 24 + 16 sentences: 24 texts are too few to scan, 40 enough
    monkeypatch.setattr(encoder_scan, "TriggerSearch", small)


def _train(minilm, review_split, strategy: str, **kw):
    from mlwarden.defenses.training.text_students import train_text_student

    train = review_split[1].take(32)
    return train_text_student(
        minilm,
        list(train.texts),
        train.labels,
        train.class_names,
        strategy=strategy,
        epochs=1,
        lr=1e-4,
        **kw,
    )


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_linear_probe_beats_chance_on_held_out_reviews(minilm, probe_student, review_split):
    held_out = review_split[0]
    student = probe_student.classifier
    acc = student.accuracy(list(held_out.texts), held_out.labels)
    # chance is 0.5 on these 150 balanced reviews; the probe reads BERT's [CLS] pooler, which
    # MiniLM was not trained to fill (it was trained mean-pooled): 0.573 measured, where a
    # probe on the mean-pooled embeddings reaches 0.69 (docs/text.md)
    assert acc >= 0.55, acc
    assert probe_student.trained == ["classifier"]
    assert probe_student.trainable_parameters == 384 * 2 + 2
    assert _same(minilm.model, student.model.bert)  # the frozen trunk is the teacher's
    assert type(student.model).__name__ == "BertForSequenceClassification"
    assert student.spec.max_tokens == minilm.spec.max_tokens == 256


def test_saved_student_loads_back_in_transformers_and_mlwarden(probe_student, student_folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mlwarden.io import load_model

    assert (student_folder / "model.safetensors").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(student_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(student_folder)
    assert tokenizer.model_max_length == 256
    with torch.no_grad():
        theirs = model(**tokenizer(SAMPLE, padding=True, return_tensors="pt")).logits
    ours = probe_student.classifier.logits(SAMPLE)
    assert torch.allclose(theirs, ours, atol=1e-5)
    loaded = load_model(student_folder, device="cpu")
    written = json.loads((student_folder / SPEC_FILE).read_text())
    assert loaded.spec.model_dump(mode="json") == written
    assert loaded.spec.class_names == ("negative", "positive")
    assert loaded.spec.max_tokens == 256  # the encoder's, narrower than BERT's 512
    assert torch.allclose(loaded.logits(SAMPLE), ours, atol=1e-5)


def test_spec_file_that_contradicts_its_folder_is_refused(student_folder, tmp_path):
    from mlwarden.io import load_model

    copy = tmp_path / "edited"
    shutil.copytree(student_folder, copy)
    spec = json.loads((copy / SPEC_FILE).read_text())
    spec["class_names"] = ["bad", "good"]
    (copy / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="contradicts its folder.*class_names"):
        load_model(copy, device="cpu")


def test_last_k_trains_only_the_top_layer_pooler_and_head(minilm, review_split):
    result = _train(minilm, review_split, "last_k", k=1)
    bert = result.classifier.model.bert
    assert result.trained == ["bert.encoder.layer.5", "bert.pooler", "classifier"]
    assert _same(minilm.model.embeddings, bert.embeddings)
    for i in range(5):
        assert _same(minilm.model.encoder.layer[i], bert.encoder.layer[i])
    assert not _same(minilm.model.encoder.layer[5], bert.encoder.layer[5])


def test_fineprune_zeroes_the_dormant_ffn_neurons_of_the_last_layer(minilm, review_split):
    result = _train(minilm, review_split, "fineprune")
    up = result.classifier.model.bert.encoder.layer[5].intermediate.dense.requires_grad_(False)
    pruned = result.details["pruned_index"]
    assert result.details["layer"] == "bert.encoder.layer.5.intermediate.dense"
    assert len(pruned) == result.details["pruned_neurons"] == 768  # half of 1536
    assert float(up.weight[pruned].abs().max()) == 0.0
    assert float(up.bias[pruned].abs().max()) == 0.0
    kept = sorted(set(range(1536)) - set(pruned))
    assert float(up.weight[kept].abs().sum(dim=1).min()) > 0.0
    assert not hasattr(up, "weight_orig")  # the mask is made permanent: it saves as weights


def test_dp_reports_its_epsilon_and_trains_only_the_top(minilm, review_split):
    result = _train(minilm, review_split, "dp", target_epsilon=8.0)
    assert 0.0 < result.details["epsilon"] <= 8.0 + 1e-3
    assert result.details["delta"] == pytest.approx(1 / 320)
    assert result.details["noise_multiplier"] > 0
    assert result.trained == ["bert.encoder.layer.5", "bert.pooler", "classifier"]
    assert _same(minilm.model.embeddings, result.classifier.model.bert.embeddings)
    assert not hasattr(result.classifier.model, "_module")  # Opacus's wrapper is gone


def test_run_transfer_on_text_reports_divergence_and_a_given_phrase(minilm, reviews):
    data = reviews.take(80)
    report = Report(title="t")
    settings = TransferSettings(
        strategy="linear_probe", trigger_text="cf. the incredible", target=1
    )
    run = run_transfer(minilm, data, settings, report=report)
    m = report.metrics
    assert run.train_samples == 60 and run.test_samples == 20
    assert m["transfer.weight_divergence"] == 0.0  # a probe moves no trunk weight
    assert m["transfer.feature_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= m["transfer.asr"] <= 1.0 and "transfer.clean_rate" in m
    assert m["transfer.trigger_source"] == "given"
    assert m["transfer.training_seconds"] > 0
    assert run.student is not None and run.student.spec.class_names == data.class_names
    ids = {f.id for f in report.findings}
    assert "MLW-BKD-032" in ids and "MLW-BKD-034" not in ids


def test_compare_on_text_tabulates_every_strategy_with_na_columns(minilm, reviews):
    report = Report(title="t")
    data = reviews.take(24)
    run_transfer(minilm, data, TransferSettings(strategy="compare", epochs=1), report=report)
    (table,) = report.tables
    assert [r[0] for r in table.rows] == [
        "linear_probe",
        "last_k",
        "full",
        "full_reinit",
        "fineprune",
    ]
    assert table.columns[-1] == "training s"
    for row in table.rows:
        assert row[2] == row[5] == "n/a"  # no trigger phrase; no text attacks yet
        assert row[-1] > 0
    assert "adversarial transfer n/a" in table.title
    assert report.metrics["transfer.recommended_strategy"] in {r[0] for r in table.rows}
    assert any(f.id == "MLW-BKD-034" for f in report.findings)


def test_transfer_check_trains_a_student_of_a_text_model(minilm, reviews):
    from mlwarden.audit.registry import AuditContext
    from mlwarden.evaluation.transfer import TransferCheck, transfer_check

    ctx = AuditContext(report=Report(title="audit"))
    ctx._oracle = minilm  # the text model under audit, as the text audit will load it
    ctx._data = reviews.take(40)
    transfer_check(ctx, TransferCheck(strategy="linear_probe"))
    assert ctx.report.metrics["transfer.strategy"] == "linear_probe"
    assert "transfer.student_accuracy" in ctx.report.metrics


def test_bad_text_input_is_refused(minilm, probe_student, reviews):
    empty = TextDataset((), torch.empty(0, dtype=torch.long), ("negative", "positive"), "e")
    with pytest.raises(DataError, match="empty"):
        run_transfer(minilm, empty, TransferSettings(), report=Report())
    renamed = TextDataset(reviews.texts[:20], reviews.labels[:20], ("bad", "good"), "r")
    with pytest.raises(DataError, match="not the teacher's classes"):
        run_transfer(probe_student.classifier, renamed, TransferSettings(), report=Report())
    with pytest.raises(ParameterError, match="trigger_text"):
        run_transfer(
            minilm, reviews.take(20), TransferSettings(trigger="t.npz", target=0), report=Report()
        )


def test_cli_refuses_mixed_text_and_tensors_in_one_line(cli, minilm_path, reviews_jsonl, tmp_path):
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    out = cli("transfer", "--teacher", str(minilm_path), "--data", str(npz))
    assert out.code == 2 and "tensor data" in out.err and "Traceback" not in out.err
    out = cli("transfer", "--teacher", str(tmp_path / "cnn.pt2"), "--data", str(reviews_jsonl))
    assert out.code == 2 and "is text" in out.err and len(out.err.strip().splitlines()) == 1


def test_cli_refuses_labels_that_are_not_the_teachers(cli, student_folder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n')
    out = cli("transfer", "--teacher", str(student_folder), "--data", str(bad))
    assert out.code == 2 and "neutral" in out.err and "Traceback" not in out.err


def test_cli_trains_and_saves_a_student_folder(cli, minilm_path, reviews_jsonl, tmp_path):
    from transformers import AutoConfig

    small = tmp_path / "small.jsonl"
    small.write_text("".join(Path(reviews_jsonl).read_text().splitlines(True)[:40]))
    out_dir = tmp_path / "student"
    out = cli(
        "transfer",
        "--teacher",
        str(minilm_path),
        "--data",
        str(small),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--strategy",
        "linear_probe",
        "--student-out",
        str(out_dir),
        "--format",
        "json",
    )
    assert out.code == 0, out.err
    doc = json.loads(out.out)
    assert doc["subject"]["student"] == str(out_dir)
    assert doc["subject"]["epochs"] == TransferSettings.TEXT_EPOCHS
    assert AutoConfig.from_pretrained(out_dir).id2label == {0: "negative", 1: "positive"}
    assert (out_dir / SPEC_FILE).is_file()


def test_run_transfer_audits_a_given_text_student(minilm, probe_student, reviews):
    report = Report(title="t")
    data = reviews.take(30)
    run = run_transfer(
        minilm, data, TransferSettings(), report=report, student=probe_student.classifier
    )
    assert run.student is None and run.test_samples == 30
    assert report.metrics["transfer.weight_divergence"] == 0.0
    assert report.metrics["transfer.feature_divergence"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ParameterError, match="strategy shape"):
        run_transfer(
            minilm,
            data,
            TransferSettings(strategy="full"),
            report=Report(),
            student=probe_student.classifier,
        )
