from __future__ import annotations

import numpy as np
import pytest

from mlwarden.core.errors import ParameterError
from mlwarden.defenses.federated.attacks import build_attack, update_norm

DELTA = [np.full((4, 3), 0.5, np.float32), np.ones(3, np.float32)]


def test_sign_flip_and_scaled_updates():
    flipped = build_attack("sign_flip", boost=2.0).poison_update(DELTA, lambda: 1.0)
    scaled = build_attack("scaled", boost=10.0).poison_update(DELTA, lambda: 1.0)
    assert np.allclose(flipped[0], -1.0) and np.allclose(flipped[1], -2.0)
    assert update_norm(scaled) == pytest.approx(10 * update_norm(DELTA), rel=1e-6)


def test_label_flip_maps_every_label():
    x = np.zeros((10, 4), np.float32)
    y = np.arange(10)
    _, flipped = build_attack("label_flip", boost=1.0).poison_data(x, y, 10, seed=0)
    assert flipped.tolist() == list(range(9, -1, -1))


def test_backdoor_plants_the_badnets_trigger_on_its_share():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (40, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(1, 5), 10)
    attack = build_attack("backdoor", boost=5.0, target=0, poison_fraction=0.5, trigger_size=3)
    px, py = attack.poison_data(x, y, 10, seed=1)
    changed = np.flatnonzero((px != x).reshape(40, -1).any(axis=1))
    assert len(changed) == 20 and (py[changed] == 0).all()
    assert (py[np.setdiff1d(np.arange(40), changed)] != 0).all()
    stamped = px[changed][:, 0, -3:, -3:]
    assert np.isin(stamped, [0.0, 1.0]).all()  # the checkerboard patch, bottom-right
    assert update_norm(attack.poison_update(DELTA, lambda: 1.0)) == pytest.approx(
        5 * update_norm(DELTA), rel=1e-6
    )


def test_stealthy_backdoor_stays_within_the_honest_norm():
    attack = build_attack("stealthy_backdoor", boost=5.0)
    sent = attack.poison_update(DELTA, lambda: 0.8)
    assert update_norm(sent) == pytest.approx(0.8, rel=1e-5)
    direction = np.concatenate([s.ravel() for s in sent]) / np.concatenate(
        [d.ravel() for d in DELTA]
    )
    assert np.allclose(direction, direction[0])  # same direction, smaller norm


def test_unknown_attack():
    with pytest.raises(ParameterError, match="unknown attack"):
        build_attack("gradient_ascent", boost=1.0)
