"""How the training data is split among clients: IID shards or a Dirichlet label skew.

The Dirichlet split is the usual non-IID benchmark (Hsu, Qi and Brown, "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification", 2019):
each class is spread over the clients in proportions drawn from Dir(alpha); a small
alpha gives each client few classes. Flower's own partitioners live in the separate
``flwr-datasets`` package, which is not a dependency of mlwarden and works on Hugging
Face datasets rather than tensors; this file is the 30 lines we need instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlwarden.core.errors import ParameterError


@dataclass(frozen=True)
class Partition:
    """``iid``, or ``dirichlet`` with its ``alpha``; parsed from ``iid`` / ``dirichlet:0.5``."""

    scheme: str
    alpha: float | None = None

    @classmethod
    def parse(cls, text: str) -> Partition:
        name, _, arg = text.strip().partition(":")
        if name == "iid" and not arg:
            return cls("iid")
        if name == "dirichlet":
            try:
                alpha = float(arg)
            except ValueError:
                raise ParameterError(
                    f"--partition {text!r}: write dirichlet:ALPHA with a number, e.g. dirichlet:0.5"
                ) from None
            if not np.isfinite(alpha) or alpha <= 0:
                raise ParameterError(
                    f"--partition {text!r}: the Dirichlet alpha must be > 0 "
                    "(small alpha: few classes per client)"
                )
            return cls("dirichlet", alpha)
        raise ParameterError(f"--partition {text!r}: choose iid or dirichlet:ALPHA")

    def __str__(self) -> str:
        return self.scheme if self.alpha is None else f"{self.scheme}:{self.alpha:g}"


def partition_indices(
    labels: np.ndarray, num_clients: int, partition: Partition, seed: int = 0
) -> list[np.ndarray]:
    """Sample indices of each client, a deterministic function of ``seed``.

    Every client gets at least two samples: a Dirichlet draw that leaves a client
    (almost) empty is redrawn, up to 100 times, as the common implementations do.
    """
    n = len(labels)
    if num_clients < 1:
        raise ParameterError(f"clients must be at least 1, got {num_clients}")
    if n < 2 * num_clients:
        raise ParameterError(f"{n} training samples cannot give {num_clients} clients two each")
    rng = np.random.default_rng(seed)
    if partition.scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]
    assert partition.alpha is not None
    for _ in range(100):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            share = rng.dirichlet(np.full(num_clients, partition.alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].extend(part.tolist())
        if min(len(s) for s in shards) >= 2:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    raise ParameterError(
        f"dirichlet:{partition.alpha:g} leaves some of {num_clients} clients without data; "
        "raise alpha or lower --clients"
    )
