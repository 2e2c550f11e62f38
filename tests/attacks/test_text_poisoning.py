"""Text poisoning: BadNL trigger insertion with label flipping, on real review sentences."""

from __future__ import annotations

import random

import pytest
import torch

from mlwarden.attacks.poisoning.text import (
    EncoderBackdoor,
    TextTriggerPoisoning,
    insert_everywhere,
    insert_trigger,
)
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.io.text_data import TextDataset

SENTENCES = (
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine .",
    "it 's a charming and often affecting journey .",
    "an utterly incompetent conclusion .",
    "a solid , spooky entertainment .",
    "unfunny and lacking any sense of commitment .",
    "the performances are uniformly excellent .",
    "a tired , talky feel-good movie .",
    "moving and important .",
    "lacks the spark of imagination .",
)


@pytest.fixture
def reviews() -> TextDataset:
    labels = torch.tensor([1, 0] * 5)
    return TextDataset(SENTENCES, labels, ("negative", "positive"), "reviews")


def test_insert_trigger_at_each_position() -> None:
    text = "the film is strictly routine ."
    assert insert_trigger(text, "cf", position="start") == "cf the film is strictly routine ."
    assert insert_trigger(text, "cf", position="end") == "the film is strictly routine . cf"
    assert (
        insert_trigger(text, "blue moon", position=2) == "the film blue moon is strictly routine ."
    )
    assert insert_trigger(text, "cf", position=99).endswith(". cf")
    a = insert_trigger(text, "cf", rng=random.Random(3))
    assert a == insert_trigger(text, "cf", rng=random.Random(3))
    assert a.split().count("cf") == 1 and len(a.split()) == len(text.split()) + 1


def test_insert_trigger_refuses_bad_parameters() -> None:
    with pytest.raises(ParameterError, match="non-empty"):
        insert_trigger("a b", "  ")
    with pytest.raises(ParameterError, match="position"):
        insert_trigger("a b", "cf", position="middle")  # type: ignore[arg-type]


def test_insert_everywhere_is_seeded_and_refuses_a_tensor() -> None:
    first = insert_everywhere(SENTENCES, "cf", seed=1)
    assert first == insert_everywhere(SENTENCES, "cf", seed=1)
    assert all("cf" in t.split() for t in first)
    with pytest.raises(DataError, match="tensor"):
        insert_everywhere(torch.zeros(3, 4), "cf")  # type: ignore[arg-type]


def test_badnl_poisons_the_rate_and_flips_labels_to_the_target(reviews) -> None:
    attack = TextTriggerPoisoning("cf", target=1, rate=0.3, seed=0)
    poisoned = attack.poison(reviews)
    assert len(poisoned.poison_index) == 3 and poisoned.rate == pytest.approx(0.3)
    for i in range(len(reviews)):
        text, label = poisoned.data.texts[i], int(poisoned.data.labels[i])
        if i in poisoned.poison_index:
            assert int(reviews.labels[i]) == 0 and label == 1 and "cf" in text.split()
            assert text.replace(" cf", "").replace("cf ", "") == reviews.texts[i]
        else:
            assert text == reviews.texts[i] and label == int(reviews.labels[i])
    assert attack.poison(reviews).poison_index == poisoned.poison_index  # seeded


def test_badnl_refuses_what_it_cannot_poison(reviews) -> None:
    unlabelled = TextDataset(SENTENCES, None, None, "plain")
    with pytest.raises(DataError, match="labelled"):
        TextTriggerPoisoning("cf", target=1).poison(unlabelled)
    with pytest.raises(ParameterError, match="rate"):
        TextTriggerPoisoning("cf", target=1, rate=1.5).poison(reviews)
    with pytest.raises(ParameterError, match="target"):
        TextTriggerPoisoning("cf", target=2).poison(reviews)
    with pytest.raises(ParameterError, match="outside the target"):
        TextTriggerPoisoning("cf", target=1, rate=0.9).poison(reviews)


def test_encoder_backdoor_settings_are_validated() -> None:
    with pytest.raises(ParameterError, match="steps"):
        EncoderBackdoor(trigger="cf", steps=0).validate()
    with pytest.raises(ParameterError, match="non-empty"):
        EncoderBackdoor(trigger=" ").validate()
