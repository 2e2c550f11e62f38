"""FreeLB students of MiniLM: the loop is ``full`` plus the embedding-space ascent, exactly.

CI-sized: one epoch on 32 real reviews; what is checked is what FreeLB does to the
training, not the robustness it buys (that needs far more data than a unit test has).
"""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import ParameterError
from mlwarden.defenses.training.freelb import FreeLBSettings, fit_freelb, initial_delta


def _states_close(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.allclose(v, sb[k], atol=1e-6) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def small(review_split):
    train = review_split[1].take(32)
    return list(train.texts), train.labels, train.class_names


def _fresh(minilm, names):
    from mlwarden.defenses.training.text_students import build_student

    return build_student(minilm, names, seed=0)


def test_freelb_without_perturbation_is_the_full_fine_tune(minilm, small):
    from mlwarden.defenses.training.text_students import _fit

    texts, labels, names = small
    full = _fresh(minilm, names)
    _fit(full, texts, labels, epochs=1, lr=1e-4, seed=0, progress=lambda *a: None, task="t")
    plain = _fresh(minilm, names)
    fit_freelb(plain, texts, labels, epochs=1, lr=1e-4, seed=0,
               settings=FreeLBSettings(adv_steps=1, init_mag=0.0))
    assert _states_close(full.model, plain.model)


def test_freelb_strategy_trains_everything_adversarially(minilm, small):
    from mlwarden.defenses.training.text_students import train_text_student

    texts, labels, names = small
    res = train_text_student(minilm, texts, labels, names, strategy="freelb", epochs=1, lr=1e-4)
    assert res.trained == ["all"] and res.details["freelb"]["adv_steps"] == 2
    assert len(res.history) == 1 and res.history[0] > 0
    full = train_text_student(minilm, texts, labels, names, strategy="full", epochs=1, lr=1e-4)
    assert not _states_close(res.classifier.model, full.classifier.model)
    with pytest.raises(ParameterError, match="freelb"):
        train_text_student(minilm, texts, labels, names, strategy="fgsm", epochs=1, lr=1e-4)


def test_initial_delta_stays_on_real_tokens_within_its_magnitude():
    embeds = torch.zeros(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    delta = initial_delta(embeds, mask, 0.5, torch.Generator().manual_seed(0))
    assert torch.all(delta[0, 3:] == 0) and torch.any(delta[1, 3:] != 0)
    assert torch.all(delta.flatten(1).norm(dim=1) <= 0.5 + 1e-6)
    with pytest.raises(ParameterError, match="adv_steps"):
        FreeLBSettings(adv_steps=0)
    with pytest.raises(ParameterError, match="adv_lr"):
        FreeLBSettings(adv_lr=float("nan"))
