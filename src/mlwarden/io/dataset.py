"""`Dataset`: labelled tensors plus class names, and the built-in scikit-learn sets.

The built-in sets ship inside scikit-learn, so tests, the demo and benchmarks run
without any download.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.seeding import make_generator
from mlwarden.core.spec import InputSpec


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, ...) float32 and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    name: str = "data"

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def spec(self, bounds: tuple[float, float] = (0.0, 1.0)) -> InputSpec:
        """The `InputSpec` these inputs satisfy."""
        return InputSpec(shape=tuple(self.x.shape[1:]), bounds=bounds, class_names=self.class_names)

    def subset(self, index: torch.Tensor | slice) -> Dataset:
        return Dataset(self.x[index], self.y[index], self.class_names, self.name)

    def take(self, n: int) -> Dataset:
        return self.subset(slice(0, n))

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Shuffle with ``seed`` and split into (first ``fraction``, rest), stratified."""
        a, b = stratified_split(self.y, fraction, seed)
        return self.subset(a), self.subset(b)


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (first ``fraction`` of each class, the rest), each shuffled with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"fraction must be in (0, 1), got {fraction}")
    gen = make_generator(seed)
    first, rest = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        cut = int(round(len(idx) * fraction))
        first.append(idx[:cut])
        rest.append(idx[cut:])
    a = torch.cat(first)
    b = torch.cat(rest)
    return a[torch.randperm(len(a), generator=gen)], b[torch.randperm(len(b), generator=gen)]


BUILTIN = ("digits", "breast_cancer")


def load_builtin(name: str) -> Dataset:
    """``digits``: 1797 8x8 grey images scaled to [0, 1], shape (1, 8, 8).
    ``breast_cancer``: 569 x 30 features min-max scaled to [0, 1]."""
    from sklearn import datasets

    if name == "digits":
        raw = datasets.load_digits()
        x = torch.tensor(raw.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        names = tuple(str(int(t)) for t in raw.target_names)
    elif name == "breast_cancer":
        raw = datasets.load_breast_cancer()
        x = torch.tensor(raw.data, dtype=torch.float32)
        lo, hi = x.min(0).values, x.max(0).values
        x = ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
        names = tuple(str(t) for t in raw.target_names)
    else:
        raise DataError(f"unknown built-in data set '{name}'; choose one of {', '.join(BUILTIN)}")
    y = torch.tensor(raw.target, dtype=torch.long)
    return Dataset(x, y, names, name)
