"""The OOD validator (`defenses.detection.ood`): calibrated, discriminative, saved safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlwarden.core.errors import InputError, ParameterError
from mlwarden.defenses.detection.ood import (
    EnergyDetector,
    MahalanobisDetector,
    load_detector,
    save_detector,
)


def test_mahalanobis_rejects_noise_and_keeps_test_data(validator, digits_cnn, digits_split):
    test = digits_split[1]
    rejected = validator.predict_ood(validator.score(digits_cnn, test.x)).float().mean()
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    caught = validator.predict_ood(validator.score(digits_cnn, noise)).float().mean()
    assert validator.layer_ == "embedding"
    assert rejected <= 0.05  # calibrated at 1% on held-out training data
    assert caught >= 0.5
    # features from the gateway's single forward pass score identically
    feats = digits_cnn.features(test.x[:20], validator.layer_)
    assert torch.allclose(validator.score_features(feats), validator.score(digits_cnn, test.x[:20]))


def test_threshold_follows_the_false_rejection_rate(digits_cnn, digits_split):
    train = digits_split[0]
    loose = MahalanobisDetector(false_rejection_rate=0.2).fit(digits_cnn, train.x, train.y)
    strict = MahalanobisDetector(false_rejection_rate=0.01).fit(digits_cnn, train.x, train.y)
    assert loose.threshold_ < strict.threshold_
    scores = strict.calibration_scores_
    assert abs(float((scores > loose.threshold_).float().mean()) - 0.2) < 0.03


def test_energy_detector_and_round_trip(tmp_path: Path, validator, digits_cnn, digits_split):
    train, test = digits_split
    energy = EnergyDetector(false_rejection_rate=0.05).fit(digits_cnn, train.x)
    assert energy.predict_ood(energy.score(digits_cnn, test.x)).float().mean() < 0.15
    for det in (validator, energy):
        path = tmp_path / f"{det.kind}.safetensors"
        save_detector(det, path, {"query_attack_threshold": 0.5})
        loaded, extra = load_detector(path)
        assert type(loaded) is type(det) and extra == {"query_attack_threshold": 0.5}
        assert loaded.threshold_ == pytest.approx(det.threshold_)
        x = test.x[:10]
        assert torch.allclose(loaded.score(digits_cnn, x), det.score(digits_cnn, x))


def test_bad_use_is_reported(tmp_path: Path, digits_cnn, digits_split):
    with pytest.raises(InputError, match="not fitted"):
        MahalanobisDetector().score(digits_cnn, digits_split[1].x[:2])
    with pytest.raises(ParameterError, match="false_rejection_rate"):
        MahalanobisDetector(false_rejection_rate=0.7).fit(digits_cnn, digits_split[0].x)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="not a valid"):
        load_detector(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_detector(tmp_path / "none.safetensors")
