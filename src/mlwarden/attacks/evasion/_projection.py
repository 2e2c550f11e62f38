"""Lp-ball geometry shared by every evasion attack (white-box and black-box).

All functions are pure, batched (first axis = samples), never modify their inputs
and keep the device and dtype of ``x``. ``eps`` may be a float or a per-sample
tensor of shape ``(N,)``, so that ensembles can attack several radii at once.

Norms are named ``"linf"`` and ``"l2"``; `check_norm` also accepts the common
spellings ``"inf"``, ``"Linf"``, ``"2"`` and ``"L2"``.

Why our own code rather than a library: these few lines sit in every inner loop of
every attack; they must be exact (a perturbation outside the ball makes a robustness
claim wrong) and allocation-light, and no maintained library exposes them alone.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from mlwarden.core.errors import ParameterError

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")

_ALIASES = {
    "linf": "linf",
    "inf": "linf",
    "l_inf": "linf",
    "infinity": "linf",
    "l2": "l2",
    "2": "l2",
}

# Smallest norm we divide by; gradients of saturated models can be exactly zero.
_TINY = 1e-12


def check_norm(norm: str, *, name: str = "norm") -> Norm:
    """Return the canonical name of ``norm`` or raise a `ParameterError` naming ``name``."""
    canonical = _ALIASES.get(str(norm).strip().lower()) if norm is not None else None
    if canonical is None:
        raise ParameterError(f"{name} must be one of {', '.join(NORMS)}, got {norm!r}")
    return canonical  # type: ignore[return-value]


def check_eps(eps: float, *, name: str = "eps", allow_zero: bool = True) -> float:
    """Return ``eps`` as a float, refusing NaN, infinities and negative values."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name} must be a finite number {bound}, got {eps!r}")
    return value


def _per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """Broadcast a per-sample tensor ``(N,)`` against ``like`` ``(N, ...)``."""
    if isinstance(value, torch.Tensor):
        value = value.to(device=like.device, dtype=like.dtype)
        return value.view(-1, *([1] * (like.dim() - 1)))
    return value


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample Lp norm of ``delta`` (shape ``(N,)``)."""
    flat = delta.flatten(1)
    if check_norm(norm) == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(len(flat))
    return flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of each perturbation in ``delta`` onto the ``eps``-ball.

    Linf: clamp every coordinate to ``[-eps, eps]``. L2: rescale the samples whose
    norm exceeds ``eps`` onto the sphere, leave the others untouched.
    """
    norm = check_norm(norm)
    e = _per_sample(eps, delta)
    if norm == "linf":
        if isinstance(e, torch.Tensor):
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-e, e)
    n = _per_sample(lp_norm(delta, "l2"), delta)
    factor = torch.clamp(e / torch.clamp(n, min=_TINY), max=1.0)  # type: ignore[operator]
    return delta * factor


def clip_to_bounds(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Clamp ``x`` into the input domain ``[low, high]`` of the model's `InputSpec`."""
    low, high = bounds
    return x.clamp(float(low), float(high))


def project_adversarial(
    x_adv: torch.Tensor,
    x: torch.Tensor,
    eps: float | torch.Tensor,
    norm: str,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """Bring ``x_adv`` back into ``{x + d : ||d|| <= eps} ∩ [low, high]``.

    Projection onto the ball then clipping to the box keeps both constraints: for
    Linf the box clip cannot leave the ball, and for L2 clipping towards ``x`` only
    shrinks the perturbation (each coordinate moves towards ``x``, which is inside).
    """
    return clip_to_bounds(x + project(x_adv - x, eps, norm), bounds)


def steepest_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-norm direction of steepest ascent for the given norm.

    Linf: ``sign(grad)``; L2: ``grad / ||grad||_2`` (zero where the gradient is zero).
    """
    if check_norm(norm) == "linf":
        return grad.sign()
    n = _per_sample(lp_norm(grad, "l2"), grad)
    return grad / torch.clamp(n, min=_TINY)  # type: ignore[arg-type]


def random_direction(
    shape: tuple[int, ...] | torch.Size,
    norm: str,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform samples from the unit Lp-ball (per first-axis sample).

    Linf: uniform in the cube. L2: Gaussian direction times ``U^(1/d)`` radius, which
    is uniform in the ball (Muller 1959). Drawn on the generator's device, then
    moved to ``device`` so that a CPU generator gives the same numbers on any device.
    """
    norm = check_norm(norm)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shape = tuple(shape)
    if norm == "linf":
        out = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype) * 2 - 1
    else:
        direction = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
        direction = steepest_direction(direction, "l2")
        dim = max(math.prod(shape[1:]), 1)
        radius = torch.rand(shape[0], generator=generator, device=gen_device, dtype=dtype)
        out = direction * radius.pow(1.0 / dim).view(-1, *([1] * (len(shape) - 1)))
    return out.to(device) if device is not None else out


def random_init(
    x: torch.Tensor,
    eps: float | torch.Tensor,
    norm: str,
    bounds: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A uniformly random start inside the ``eps``-ball around ``x``, clipped to the bounds.

    The random start of PGD (Madry et al. 2018, "Towards Deep Learning Models
    Resistant to Adversarial Attacks"); with restarts it avoids the flat or masked
    gradient at the data point itself.
    """
    delta = random_direction(x.shape, norm, generator, device=x.device, dtype=x.dtype)
    e = _per_sample(eps, x)
    return clip_to_bounds(x + delta * e, bounds)


__all__ = [
    "NORMS",
    "Norm",
    "check_eps",
    "check_norm",
    "clip_to_bounds",
    "lp_norm",
    "project",
    "project_adversarial",
    "random_direction",
    "random_init",
    "steepest_direction",
]
