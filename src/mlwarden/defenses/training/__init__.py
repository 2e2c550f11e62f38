"""Training strategies (fine-tuning, fine-pruning, unlearning, DP-SGD).

The plain training loop they build on is `mlwarden.core.training.fit`.
"""
