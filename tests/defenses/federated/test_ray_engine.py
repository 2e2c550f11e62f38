"""Flower's Ray engine and `InProcessGrid` give the same federation (opt in: Ray is slow).

Ray's start-up costs 20-80 s here and fails outright at high load (docs/federated.md), so
this runs only with ``MLWARDEN_TEST_RAY=1``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("MLWARDEN_TEST_RAY") != "1", reason="set MLWARDEN_TEST_RAY=1 to start Ray"
)


def test_ray_and_in_process_agree(federated_settings):
    from mlwarden.defenses.federated.simulation import run_federated

    small = federated_settings.model_copy(
        update={"strategies": ["fedavg", "secagg"], "rounds": 1, "clients": 4, "engine": "ray"}
    )
    on_ray = run_federated(small)
    here = run_federated(small.model_copy(update={"engine": "inprocess"}))
    assert on_ray.engine == "ray" and here.engine == "inprocess"
    for a, b in zip(on_ray.runs, here.runs, strict=True):
        assert a.label == b.label
        for x, y in zip(a.weights, b.weights, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-4)
