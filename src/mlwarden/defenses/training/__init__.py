"""Training loops and strategies (plain, adversarial, fine-tuning, fine-pruning, DP-SGD)."""

from mlwarden.defenses.training.supervised import TrainingHistory, fit

__all__ = ["TrainingHistory", "fit"]
