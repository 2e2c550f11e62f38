"""Small reference models.

They are importable factories (``mlwarden.models:SmallCNN``) so a state dict or
``.safetensors`` file of them can be loaded through the factory loader, and they
have named blocks (``features``, ``head``) that fine-tuning strategies and
feature-based detectors can address.
"""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; ~20k parameters for 8x8 inputs."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, image_size: int = 8
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 2 * width * (image_size // 2) ** 2
        self.embedding = nn.Sequential(nn.Linear(flat, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.embedding(self.features(x)))


class MLP(nn.Module):
    """A multi-layer perceptron for tabular data."""

    def __init__(
        self, in_features: int = 30, num_classes: int = 2, hidden: tuple[int, ...] = (64, 64)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.features(x))


def build(name: str, **kwargs: int) -> nn.Module:
    """Build a reference model by name (``small_cnn`` or ``mlp``)."""
    factories = {"small_cnn": SmallCNN, "mlp": MLP}
    if name not in factories:
        from mlwarden.core.errors import ParameterError

        raise ParameterError(f"unknown model '{name}'; choose one of {sorted(factories)}")
    return factories[name](**kwargs)
