"""Inherited encoder backdoors in the text transfer audit, and the trigger-neuron defence.

CI-sized: one MiniLM copy with a backdoor on 'cf' planted in 40 steps (`cf_teacher`, per
session), students trained one epoch on 48 reviews; the scan runs with a small budget and
a cut for that budget. The table at the defaults is benchmarks/text_inheritance_table.py.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from mlwarden.core.errors import ParameterError
from mlwarden.core.findings import Report
from mlwarden.defenses.detection import encoder_scan
from mlwarden.defenses.detection.calibration import Cut
from mlwarden.defenses.detection.trigger_search import TriggerSearch, collapse_scores
from mlwarden.defenses.training import trigger_neurons as tn
from mlwarden.evaluation.text_transfer import audit_text_transfer, decoy_phrase
from mlwarden.evaluation.transfer import TransferSettings, run_transfer

SMALL = {
    "rounds": 1,
    "candidates": 8,
    "max_tokens": 2,
    "extend_from": 1,
    "null_tokens": 16,
    "search_sentences": 8,
    "verify_sentences": 8,
}
SMALL_BUDGET_CUT = 5.0
"""The SMALL budget's cut (tests/defenses/test_encoder_backdoor.py: the planted index is over
it and the original MiniLM's is under half the planted one)."""


def _triggered_collapse(encoder, texts: list[str], trigger: str) -> float:
    from mlwarden.attacks.poisoning.text import insert_everywhere

    emb = encoder.embed(insert_everywhere(texts, trigger, seed=3))
    return float(collapse_scores(emb.unsqueeze(0))[0])


def test_the_defence_undoes_the_collapse_and_random_neurons_do_not(cf_teacher, reviews) -> None:
    texts = list(reviews.texts)
    found = tn.find_trigger_neurons(cf_teacher, texts[100:164], "cf")
    assert found.scores.shape == (6, 1536)
    assert found.count == int(tn.TRIGGER_PRUNE_SHARE * 6 * 1536)
    picked = torch.zeros_like(found.scores, dtype=torch.bool)
    for layer, ids in found.selected.items():
        picked[layer, ids] = True
    assert float(found.scores[picked].min()) >= float(found.scores[~picked].max())
    held = texts[200:240]
    before = _triggered_collapse(cf_teacher, held, "cf")
    defended = copy.deepcopy(cf_teacher)
    tn.make_permanent(tn.prune_trigger_neurons(defended, found))
    ids = tn.reset_trigger_tokens(defended, "cf")
    assert ids == cf_teacher.tokenizer("cf", add_special_tokens=False)["input_ids"]
    gen = torch.Generator().manual_seed(0)
    same_count = {
        k: torch.randperm(1536, generator=gen)[: len(v)].tolist() for k, v in found.selected.items()
    }
    control = copy.deepcopy(cf_teacher)
    tn.prune_trigger_neurons(
        control, tn.TriggerNeurons(same_count, found.up_projection, found.scores, "cf", 0)
    )
    after = _triggered_collapse(defended, held, "cf")
    random_after = _triggered_collapse(control, held, "cf")
    # the defence undoes the collapse of triggered sentences; as many random neurons do not
    assert after < before - 0.2, (before, after)
    assert random_after > after + 0.2, (random_after, after)


def test_trigger_prune_student_is_measured_with_its_neurons_pruned(cf_teacher, reviews) -> None:
    report = Report(title="t")
    settings = TransferSettings(strategy="trigger_prune", trigger_text="cf", epochs=1)
    run = run_transfer(cf_teacher, reviews.take(48), settings, report=report)
    m = report.metrics
    assert m["transfer.trigger_source"] == "given" and m["transfer.trigger_text"] == "cf"
    assert m["transfer.pruned_neurons"] == int(tn.TRIGGER_PRUNE_SHARE * 6 * 1536)
    assert m["transfer.target_class"] in (0, 1)  # no target given: the largest excess
    assert m["transfer.excess_asr"] == pytest.approx(
        m["transfer.asr"] - max(m["transfer.clean_rate"], m["transfer.decoy_rate"]), abs=1e-3
    )
    assert run.student is not None
    layers = run.student.model.bert.encoder.layer
    (finding,) = [f for f in report.findings if f.id == "MLW-BKD-032"]
    index = finding.evidence["training"]["pruned_layers"]
    assert sum(index.values()) == m["transfer.pruned_neurons"]
    up = layers[int(next(iter(index)))].intermediate.dense
    assert not hasattr(up, "weight_orig")  # the mask was made permanent
    zero_rows = int((up.weight.abs().sum(dim=1) == 0).sum())
    assert zero_rows == index[next(iter(index))]
    assert (
        finding.evidence["training"]["reset_tokens"]
        == cf_teacher.tokenizer("cf", add_special_tokens=False)["input_ids"]
    )


def test_the_teacher_scan_names_the_trigger_the_students_are_measured_for(
    cf_teacher, reviews, monkeypatch
) -> None:
    monkeypatch.setattr(encoder_scan, "TriggerSearch", functools.partial(TriggerSearch, **SMALL))
    monkeypatch.setattr(
        encoder_scan, "ENCODER_CUT", Cut("test budget", SMALL_BUDGET_CUT, 0.0, 0, 1)
    )
    report = Report(title="t")
    run_transfer(
        cf_teacher, reviews.take(60), TransferSettings(strategy="linear_probe"), report=report
    )
    m = report.metrics
    assert m["transfer.trigger_source"] == "teacher scan (trigger_token_search)"
    assert m["transfer.trigger_text"] == "cf"
    # the student is measured for the named trigger against the larger of its clean and
    # decoy rates (whether a [CLS]-pooled student inherits a mean-pooled collapse is what
    # benchmarks/text_inheritance_table.py measures at the defaults)
    assert m["transfer.excess_asr"] == pytest.approx(
        m["transfer.asr"] - max(m["transfer.clean_rate"], m["transfer.decoy_rate"]), abs=1e-3
    )
    assert (
        "names the trigger 'cf'"
        in next(f for f in report.findings if f.id == "MLW-BKD-032").evidence["trigger_note"]
    )


def test_decoy_and_target_choice(minilm, probe_student, reviews) -> None:
    assert decoy_phrase("blue moon rising") == decoy_phrase("blue moon rising")
    words = decoy_phrase("table window river", seed=1).split()
    assert len(words) == 3 and not {"table", "window", "river"} & set(words)
    audit = audit_text_transfer(
        minilm, probe_student.classifier, reviews.take(40), trigger_text="cf"
    )
    assert audit.target_class in (0, 1) and audit.trigger_source == "given"
    assert audit.baseline_asr == max(audit.clean_rate, audit.decoy_rate)
    given = audit_text_transfer(
        minilm, probe_student.classifier, reviews.take(40), trigger_text="cf", target=0
    )
    assert given.target_class == 0


def test_trigger_prune_needs_a_trigger_and_a_text_teacher(minilm, reviews) -> None:
    from mlwarden.core.spec import SpecOverride
    from mlwarden.io import from_module
    from mlwarden.io.dataset import Dataset

    with pytest.raises(ParameterError, match="trigger_prune prunes the neurons of a known trigger"):
        run_transfer(
            minilm, reviews.take(24), TransferSettings(strategy="trigger_prune"), report=Report()
        )
    tensor_model = from_module(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)),
        SpecOverride(shape=(4,), class_names=("a", "b")),
    )
    data = Dataset(torch.zeros(8, 4), torch.tensor([0, 1] * 4), ("a", "b"))
    with pytest.raises(ParameterError, match="students of a text teacher"):
        run_transfer(
            tensor_model, data, TransferSettings(strategy="trigger_prune"), report=Report()
        )
    with pytest.raises(ParameterError, match="non-empty trigger"):
        tn.find_trigger_neurons(minilm, list(reviews.texts[:8]), "  ")
