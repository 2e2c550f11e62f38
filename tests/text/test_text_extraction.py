"""Knockoff extraction of a text classifier with natural text from another source, through
the text oracle, into a head on the thief's own MiniLM embeddings."""

from __future__ import annotations

import json
from pathlib import Path


def test_text_knockoff_copies_the_victim(
    tmp_path: Path, cli, text_victim_path, text_splits, plot_queries_jsonl, minilm_path
) -> None:
    out = tmp_path / "extraction.json"
    result = cli(
        "attack",
        "extraction",
        "--model",
        str(text_victim_path),
        "--data",
        str(text_splits["non_members"]),
        "--queries",
        str(plot_queries_jsonl),
        "--encoder",
        str(minilm_path),
        "--budget",
        "128",
        "-f",
        "json",
        "-o",
        str(out),
    )
    assert result.code == 0, result.err
    report = json.loads(out.read_text(encoding="utf-8"))
    metrics = report["metrics"]
    assert metrics["extraction.natural.scores.queries"] == 128
    chance = metrics["extraction.natural.scores.chance_agreement"]
    assert metrics["extraction.natural.scores.agreement"] > max(0.65, chance + 0.1)
    curve = next(t for t in report["tables"] if t["id"] == "extraction-curve-natural-scores")
    assert [row[0] for row in curve["rows"]] == [32, 64, 96, 128]


def test_text_extraction_refuses_tensor_strategies_in_one_line(
    cli, text_victim_path, text_splits, minilm_path
) -> None:
    result = cli(
        "attack",
        "extraction",
        "--model",
        str(text_victim_path),
        "--data",
        str(text_splits["non_members"]),
        "--encoder",
        str(minilm_path),
        "--strategy",
        "random",
    )
    assert result.code != 0
    assert "natural text only" in result.err and len(result.err.strip().splitlines()) == 1


def test_text_extraction_needs_the_thiefs_encoder(cli, text_victim_path, text_splits) -> None:
    result = cli(
        "attack",
        "extraction",
        "--model",
        str(text_victim_path),
        "--data",
        str(text_splits["non_members"]),
    )
    assert result.code != 0 and "--encoder FOLDER" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_tensor_attack_on_a_text_model_errors_in_one_line(
    cli, text_victim_path, text_splits
) -> None:
    result = cli(
        "attack",
        "evasion",
        "--model",
        str(text_victim_path),
        "--data",
        str(text_splits["non_members"]),
    )
    assert result.code != 0 and "text classifier" in result.err
    assert len(result.err.strip().splitlines()) == 1
