"""Small reference architectures used by the demo, the tests and the benchmarks."""

from mlwarden.models.small import MLP, SmallCNN, build

__all__ = ["MLP", "SmallCNN", "build"]
