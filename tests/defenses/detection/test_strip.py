"""STRIP: calibrated false rejections on clean inputs, triggered inputs caught."""

from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import InputError, ParameterError
from mlwarden.defenses.detection import STRIP


def test_strip_catches_triggered_inputs_at_calibrated_frr(badnets_model, digits_split) -> None:
    train, test = digits_split
    model = badnets_model.classifier
    strip = STRIP(n_overlays=12, frr=0.05, seed=0).fit(model, train.x[:400])
    assert strip.threshold_ > 0
    clean_flags = strip.predict(test.x)
    assert clean_flags.dtype == torch.bool and clean_flags.shape == (len(test),)
    assert float(clean_flags.float().mean()) < 0.12
    keep = test.y != badnets_model.target
    triggered = badnets_model.attack.trigger.apply(test.x[keep])
    detection = float(strip.predict(triggered).float().mean())
    assert detection > 0.8, f"STRIP detected only {detection:.2f} of triggered inputs"
    assert float(strip.score(triggered).mean()) < float(strip.score(test.x).mean())


def test_strip_is_deterministic_and_validated(badnets_model, digits_split) -> None:
    train, test = digits_split
    model = badnets_model.classifier
    with pytest.raises(InputError, match="not fitted"):
        STRIP().predict(test.x[:2])
    with pytest.raises(ParameterError, match="frr"):
        STRIP(frr=1.5).fit(model, train.x)
    strip = STRIP(n_overlays=4, seed=1).fit(model, train.x[:100])
    assert torch.equal(strip.score(test.x[:10]), strip.score(test.x[:10]))
    from mlwarden.core.errors import DataError

    with pytest.raises(DataError, match="shape"):
        strip.score(torch.zeros(2, 30))
