"""A zoo of digits models, backdoored in different ways and clean, trained once per session.

Triggers differ in shape, position, size, pattern, blending and target class, so the
detectors are tried on more than one kind of backdoor. Detection scans of the zoo are
cached here too: several tests read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from mlwarden.attacks.poisoning import BadNets, Blended, PoisonedDataset, PoisoningAttack
from mlwarden.core import Classifier
from mlwarden.core.training import fit
from mlwarden.defenses.detection.model_scan import scan_model
from mlwarden.defenses.detection.result import BackdoorScan
from mlwarden.models import SmallCNN

# settings used by the tests: fewer steps and smaller batches than the defaults, to fit the
# suite's time budget; the defaults are exercised by the CLI detect test
SCAN = {"steps": 300, "batch_size": 32}


@dataclass
class ZooModel:
    name: str
    classifier: Classifier
    attack: PoisoningAttack | None
    poisoned: PoisonedDataset | None

    @property
    def target(self) -> int | None:
        return None if self.attack is None else self.attack.target


ATTACKS: dict[str, PoisoningAttack | None] = {
    "clean-seed1": None,
    "badnets-3x3-checker-bottomright-t0": BadNets(target=0, rate=0.1, size=3),
    "badnets-2x2-solid-topleft-t7": BadNets(
        target=7, rate=0.1, size=2, position="top-left", pattern="solid"
    ),
    "blend-stripes-a0.15-t5": Blended(target=5, rate=0.1, alpha=0.15, pattern="stripes"),
}


@pytest.fixture(scope="session")
def zoo(digits_split, digits_spec, digits_cnn) -> dict[str, ZooModel]:
    train, _ = digits_split
    models = {"clean-fixture": ZooModel("clean-fixture", digits_cnn, None, None)}
    for seed, (name, attack) in enumerate(ATTACKS.items(), start=1):
        poisoned = attack.poison(train) if attack is not None else None
        data = poisoned.data if poisoned is not None else train
        torch.manual_seed(seed)
        module = SmallCNN()
        fit(module, data.x, data.y, epochs=15, lr=2e-3, batch_size=64, seed=seed)
        models[name] = ZooModel(name, Classifier(module, digits_spec, name=name), attack, poisoned)
    return models


@pytest.fixture(scope="session")
def zoo_scans(zoo, digits_split) -> dict[str, list[BackdoorScan]]:
    _, test = digits_split
    return {
        name: scan_model(m.classifier, test.x, test.y, max_samples=300, seed=0, **SCAN)
        for name, m in zoo.items()
    }


@pytest.fixture(scope="session")
def badnets_model(zoo) -> ZooModel:
    return zoo["badnets-3x3-checker-bottomright-t0"]


@pytest.fixture(scope="session")
def badnets_5pct(digits_split, digits_spec) -> ZooModel:
    """A SmallCNN trained as `digits_cnn` on digits with 5% BadNets poison (3x3 -> class 0):
    the scan-data case of issue #21 (benchmarks/data_scan_eval.py trains the same)."""
    train, _ = digits_split
    attack = BadNets(target=0, rate=0.05, size=3)
    poisoned = attack.poison(train)
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, poisoned.data.x, poisoned.data.y, epochs=15, lr=2e-3, batch_size=64, seed=0)
    name = "badnets-5pct-3x3-t0"
    return ZooModel(name, Classifier(module, digits_spec, name=name), attack, poisoned)
