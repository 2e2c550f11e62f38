"""DP-SGD training through Opacus (Abadi et al., CCS 2016), with the epsilon spent.

Opacus does the per-sample gradient clipping, the noise and the privacy accounting;
we only adapt it to mlwarden's full-tensor training API, make it deterministic with
a seed, and check the model first with Opacus's own validator (BatchNorm and the
like cannot be trained privately) so the user gets every problem at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mlwarden.core.errors import DataError, DependencyError, ParameterError
from mlwarden.core.progress import ProgressCallback, null_progress


@dataclass
class PrivateTraining:
    """Outcome of DP-SGD: the trained module and the (epsilon, delta) it spent."""

    module: nn.Module
    epsilon: float
    delta: float
    noise_multiplier: float
    loss: list[float] = field(default_factory=list)


def fit_private(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target_epsilon: float,
    delta: float | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> PrivateTraining:
    """Train ``module`` in place with DP-SGD to ``(target_epsilon, delta)``-DP.

    ``delta`` defaults to ``1 / (10 n)``, below the ``1/n`` that would allow leaking a
    whole record. The module keeps its own class (Opacus's wrapper is removed).
    """
    try:
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise DependencyError(
            "DP-SGD needs Opacus", hint="pip install 'mlwarden[privacy]'"
        ) from exc
    from torch.utils.data import DataLoader, TensorDataset

    for name, value in (("target_epsilon", target_epsilon), ("lr", lr),
                        ("max_grad_norm", max_grad_norm)):
        if not value > 0:
            raise ParameterError(f"{name} must be positive, got {value}")
    if epochs <= 0 or batch_size <= 0:
        raise ParameterError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    n = len(x)
    if n == 0 or n != len(y):
        raise DataError(f"need as many labels as samples (got {len(x)} and {len(y)})")
    delta = delta if delta is not None else 1.0 / (10 * n)
    if not 0 < delta < 1:
        raise ParameterError(f"delta must be in (0, 1), got {delta}")
    module.train()  # Opacus validates (and trains) in training mode
    problems = ModuleValidator.validate(module, strict=False)
    if problems:
        listing = "; ".join(str(p) for p in problems)
        raise ParameterError(
            f"the model cannot be trained with DP-SGD: {listing}",
            hint="opacus.validators.ModuleValidator.fix replaces unsupported layers such as "
            "BatchNorm",
        )
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=min(batch_size, n),
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    engine = PrivacyEngine(accountant="prv")
    private, optimizer, loader = engine.make_private_with_epsilon(
        module=module, optimizer=optimizer, data_loader=loader, target_epsilon=target_epsilon,
        target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm,
        noise_generator=torch.Generator().manual_seed(seed + 1),
    )
    history: list[float] = []
    private.train()
    with warnings.catch_warnings():
        # Opacus's hooks warn that inputs need no gradients; they never do here.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        _train(private, optimizer, loader, epochs, history, progress)
    private.eval()
    epsilon = float(engine.get_epsilon(delta))
    # Opacus wraps the module and adds hooks; hand back the user's own module, clean.
    private._close()  # type: ignore[attr-defined]
    for p in module.parameters():
        p.grad_sample = None  # type: ignore[attr-defined]
    module.eval()
    return PrivateTraining(module, epsilon, delta, float(optimizer.noise_multiplier), history)


def _train(private: nn.Module, optimizer: Any, loader: Any, epochs: int, history: list[float],
           progress: ProgressCallback) -> None:
    for epoch in range(epochs):
        total, count = 0.0, 0
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(private(xb), yb)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
        history.append(total / max(count, 1))
        progress("DP-SGD training", epoch + 1, epochs)
