"""The packaged MiniLM on real labelled text: a linear probe on its sentence embeddings.

Measured with this split (300 train / 200 test, seed 0): 0.720 held-out accuracy, chance 0.5;
Fine-tuning comes later (#14 item 4); this pins that the loaded encoder gives embeddings
that carry the sentiment of real reviews, read through the text data loader.
"""

from __future__ import annotations

import pytest
import torch

from mlwarden.io import load_text_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def reviews(reviews_jsonl):
    return load_text_data(reviews_jsonl, text_column="review", label_column="sentiment",
                          class_names=("negative", "positive"))


def test_the_reviews_are_real_and_balanced(reviews):
    assert len(reviews) == 500 and reviews.class_names == ("negative", "positive")
    assert int(reviews.labels.sum()) == 250
    assert len(set(reviews.texts)) > 495


def test_a_linear_probe_on_minilm_embeddings_reads_sentiment(reviews, minilm):
    from sklearn.linear_model import LogisticRegression

    embeddings = minilm.embed(list(reviews.texts)).numpy()
    labels = reviews.labels.numpy()
    probe = LogisticRegression(max_iter=2000).fit(embeddings[:300], labels[:300])
    accuracy = probe.score(embeddings[300:], labels[300:])
    print(f"linear probe on MiniLM embeddings: {accuracy:.3f} held-out accuracy")
    assert accuracy >= 0.65, accuracy
    shuffled = torch.randperm(300, generator=torch.Generator().manual_seed(0)).numpy()
    control = LogisticRegression(max_iter=2000).fit(embeddings[:300], labels[:300][shuffled])
    assert control.score(embeddings[300:], labels[300:]) < accuracy - 0.05
