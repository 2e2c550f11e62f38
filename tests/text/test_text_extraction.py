"""Knockoff extraction of a text classifier with natural text from another source, through
the text oracle, into a head on the thief's own MiniLM embeddings."""

from __future__ import annotations


def test_text_knockoff_copies_the_victim(
    text_victim, text_splits, plot_queries_jsonl, minilm
) -> None:
    from mlwarden.audit.text import labelled_text
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.extraction import ExtractionSettings, run_extraction
    from mlwarden.io.text_data import load_text_data

    data = labelled_text(str(text_splits["non_members"]), text_victim).take(100)
    thief_texts = list(load_text_data(plot_queries_jsonl, label_column=None).texts)
    report = Report()
    result = run_extraction(
        text_victim,
        data,
        ExtractionSettings(budget=128),
        report,
        queries=thief_texts,
        encoder=minilm,
    )
    metrics = report.metrics
    assert result.queries == metrics["extraction.natural.scores.queries"] == 128
    chance = metrics["extraction.natural.scores.chance_agreement"]
    assert metrics["extraction.natural.scores.agreement"] > max(0.65, chance + 0.1)
    assert [p.queries for p in result.curve] == [32, 64, 96, 128]
    # The copy is the thief's encoder plus its head, and answers text.
    assert result.text_copy.predict(["A dull, lifeless film."]).shape == (1,)


def test_text_extraction_stops_when_the_thief_runs_out_of_text(text_victim, minilm) -> None:
    from mlwarden.attacks.extraction import TextKnockoff
    from mlwarden.core.contract import as_oracle

    oracle = as_oracle(text_victim, text=True)
    texts = ["It rains in the city.", "A man walks his dog.", "The train is late.", "Snow."]
    result = TextKnockoff(10, minilm, epochs=2, checkpoints=2).extract(
        oracle, texts, eval_texts=texts, eval_labels=oracle.labels(texts)
    )
    assert result.queries == 4 and "only 4 texts" in (result.stopped or "")


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
