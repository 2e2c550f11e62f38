"""What a malicious client does to its data and to the update it sends.

Flower has no attacks (it is a framework for honest federations), so these are ours.
Every attack is one small class: ``poison_data`` changes what the client trains on,
``poison_update`` changes the update ``delta = local - global`` it sends back.

- `LabelFlip`: trains on labels ``C - 1 - y`` (Tolpegin et al., "Data Poisoning Attacks
  Against Federated Learning Systems", 2020).
- `SignFlip`: sends ``-boost * delta`` (the "sign-flipping" Byzantine update of Li et al.,
  "RSA: Byzantine-Robust Stochastic Aggregation Methods", 2019).
- `Scaled`: sends ``boost * delta``, an honest direction with an outsized norm.
- `ModelReplacement`: the backdoor of Bagdasaryan et al., "How To Backdoor Federated
  Learning", AISTATS 2020: train on data with a BadNets trigger (mlwarden's
  `attacks.poisoning.BadNets`) relabelled to ``target``, then boost the update by
  ``gamma = n / m`` so that plain averaging replaces the global model with the backdoored one.
- `StealthyReplacement`: the same backdoor, but the boosted update is projected back
  onto the norm of an honest update of the client's own clean data, so that a norm
  bound or a norm-based anomaly test sees nothing unusual (the "constrain-and-scale"
  idea of the same paper, with the constraint on the update norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlwarden.core.errors import ParameterError

ATTACKS = ("none", "label_flip", "sign_flip", "scaled", "backdoor", "stealthy_backdoor")
"""Names `--attack` accepts."""

BACKDOOR_ATTACKS = ("backdoor", "stealthy_backdoor")

Update = list[np.ndarray]


def update_norm(delta: Update) -> float:
    """L2 norm of an update over all its arrays."""
    return float(np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in delta)))


@dataclass(frozen=True)
class ClientAttack:
    """No attack: the client is honest. The base of the others."""

    name: str = "none"

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def poison_update(self, delta: Update, honest_norm: Callable[[], float]) -> Update:
        return delta


@dataclass(frozen=True)
class LabelFlip(ClientAttack):
    name: str = "label_flip"

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return x, (num_classes - 1 - y).astype(y.dtype)


@dataclass(frozen=True)
class SignFlip(ClientAttack):
    name: str = "sign_flip"
    boost: float = 1.0

    def poison_update(self, delta: Update, honest_norm: Callable[[], float]) -> Update:
        return [-self.boost * d for d in delta]


@dataclass(frozen=True)
class Scaled(ClientAttack):
    name: str = "scaled"
    boost: float = 10.0

    def poison_update(self, delta: Update, honest_norm: Callable[[], float]) -> Update:
        return [self.boost * d for d in delta]


@dataclass(frozen=True)
class ModelReplacement(ClientAttack):
    """BadNets-poisoned local training, then the update boosted by ``boost`` (gamma)."""

    name: str = "backdoor"
    target: int = 0
    poison_fraction: float = 0.5
    trigger_size: int = 3
    boost: float = 5.0

    def trigger(self):  # type: ignore[no-untyped-def]
        from mlwarden.attacks.poisoning.triggers import PatchTrigger

        return PatchTrigger(size=self.trigger_size, position="bottom-right")

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from mlwarden.attacks.poisoning import BadNets
        from mlwarden.io.dataset import Dataset

        names = tuple(str(i) for i in range(num_classes))
        local = Dataset(torch.from_numpy(x), torch.from_numpy(y), names, "client")
        attack = BadNets(
            self.target,
            self.poison_fraction,
            size=self.trigger_size,
            position="bottom-right",
            seed=seed,
        )
        poisoned = attack.poison(local).data
        return poisoned.x.numpy(), poisoned.y.numpy()

    def poison_update(self, delta: Update, honest_norm: Callable[[], float]) -> Update:
        return [self.boost * d for d in delta]


@dataclass(frozen=True)
class StealthyReplacement(ModelReplacement):
    """`ModelReplacement` whose update is scaled down to ``slack`` x an honest update's norm."""

    name: str = "stealthy_backdoor"
    slack: float = 1.0

    def poison_update(self, delta: Update, honest_norm: Callable[[], float]) -> Update:
        boosted = [self.boost * d for d in delta]
        limit = self.slack * honest_norm()
        norm = update_norm(boosted)
        if norm <= limit or norm == 0.0:
            return boosted
        return [d * (limit / norm) for d in boosted]


def build_attack(
    name: str,
    *,
    boost: float,
    target: int = 0,
    poison_fraction: float = 0.5,
    trigger_size: int = 3,
) -> ClientAttack:
    """The attack ``name`` with its hyper-parameters (``boost`` is gamma for the backdoors)."""
    if name == "none":
        return ClientAttack()
    if name == "label_flip":
        return LabelFlip()
    if name == "sign_flip":
        return SignFlip(boost=boost)
    if name == "scaled":
        return Scaled(boost=boost)
    if name == "backdoor":
        return ModelReplacement(
            target=target, poison_fraction=poison_fraction, trigger_size=trigger_size, boost=boost
        )
    if name == "stealthy_backdoor":
        return StealthyReplacement(
            target=target, poison_fraction=poison_fraction, trigger_size=trigger_size, boost=boost
        )
    raise ParameterError(f"unknown attack '{name}'; choose one of {', '.join(ATTACKS)}")
