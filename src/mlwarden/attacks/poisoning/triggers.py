"""Backdoor triggers: a patch stamped onto the input, or a pattern blended into it.

A trigger is pure data (a mask and a pattern in the input's own value range), so
the same object poisons training data, measures the attack success rate, and is
compared with what a detector reverse-engineers. Both kinds apply as
``x' = (1 - m) * x + m * p`` (BadNets: ``m`` is 1 on a patch; Blended: ``m = alpha``
everywhere), which is also exactly the model Neural Cleanse inverts.

References: Gu et al., "BadNets", 2017 (patch); Chen et al., "Targeted Backdoor
Attacks on Deep Learning Systems Using Data Poisoning", 2017 (blended).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.seeding import make_generator

Position = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]
PatchPattern = Literal["checkerboard", "solid", "random"]
BlendPattern = Literal["noise", "stripes", "checkerboard"]

_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


def image_axes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of an input shape: (C,H,W), (H,W) or (F,) as (1,1,F)."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise DataError(f"triggers need inputs of shape (C,H,W), (H,W) or (F,); got {shape}")


class Trigger(Protocol):
    """What every trigger offers: its mask and pattern for an input shape, and `apply`."""

    def mask_and_pattern(
        self, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mask`` broadcastable to ``shape`` with values in [0, 1], and ``pattern`` of
        ``shape``."""

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        """A triggered copy of the batch ``x`` (never modified in place)."""


def _stamp(trigger: Trigger, x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise DataError("a trigger is applied to a batch tensor of shape (N, ...)")
    mask, pattern = trigger.mask_and_pattern(tuple(x.shape[1:]), bounds)
    mask, pattern = mask.to(x.device, x.dtype), pattern.to(x.device, x.dtype)
    return ((1.0 - mask) * x + mask * pattern).clamp(bounds[0], bounds[1])


def _to_shape(plane: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape a (C,H,W) plane to the input shape it was built for."""
    return plane.reshape(shape)


@dataclass(frozen=True)
class PatchTrigger:
    """A BadNets patch: ``size`` x ``size`` pixels at ``position`` with a fixed ``pattern``.

    ``position`` is a corner name, ``"center"`` or an explicit ``(row, col)`` of the
    patch's top-left pixel; ``margin`` keeps it off the border. Patterns use the input
    bounds: ``checkerboard`` alternates low/high, ``solid`` is ``high``, ``random`` is a
    fixed binary pattern drawn from ``seed``. For (F,) tabular inputs the patch is a
    run of ``size`` features.
    """

    size: int | tuple[int, int] = 3
    position: Position | tuple[int, int] = "bottom-right"
    pattern: PatchPattern = "checkerboard"
    margin: int = 0
    seed: int = 0

    def _hw(self) -> tuple[int, int]:
        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
        if h <= 0 or w <= 0:
            raise ParameterError(f"size must be positive, got {self.size}")
        return int(h), int(w)

    def origin(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """Top-left (row, col) of the patch in an input of ``shape``."""
        _, height, width = image_axes(shape)
        h, w = self._hw()
        if len(shape) == 1:
            h = 1
        if h + self.margin > height or w + self.margin > width:
            raise ParameterError(
                f"a {h}x{w} patch with margin {self.margin} does not fit an input of shape {shape}"
            )
        if isinstance(self.position, tuple):
            row, col = self.position
            if not (0 <= row <= height - h and 0 <= col <= width - w):
                raise ParameterError(
                    f"position {self.position} puts the {h}x{w} patch outside {height}x{width}"
                )
            return int(row), int(col)
        if self.position not in _POSITIONS:
            raise ParameterError(
                f"position must be one of {_POSITIONS} or (row, col), got {self.position!r}"
            )
        m = self.margin
        rows = {"top": m, "bottom": height - h - m, "center": (height - h) // 2}
        cols = {"left": m, "right": width - w - m, "center": (width - w) // 2}
        if self.position == "center":
            return rows["center"], cols["center"]
        vert, horiz = self.position.split("-")
        return rows[vert], cols[horiz]

    def mask_and_pattern(
        self, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        channels, height, width = image_axes(shape)
        h, w = self._hw()
        if len(shape) == 1:
            h = 1
        row, col = self.origin(shape)
        low, high = bounds
        mask = torch.zeros(1, height, width)
        mask[:, row : row + h, col : col + w] = 1.0
        if self.pattern == "solid":
            tile = torch.ones(h, w)
        elif self.pattern == "checkerboard":
            tile = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float()
        elif self.pattern == "random":
            tile = torch.randint(0, 2, (h, w), generator=make_generator(self.seed)).float()
        else:
            raise ParameterError(
                f"pattern must be 'checkerboard', 'solid' or 'random', got {self.pattern!r}"
            )
        plane = torch.full((channels, height, width), low)
        plane[:, row : row + h, col : col + w] = low + tile * (high - low)
        mask_full = mask.expand(channels, height, width)
        return _to_shape(mask_full.clone(), shape), _to_shape(plane, shape)

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        return _stamp(self, x, bounds)


@dataclass(frozen=True)
class BlendTrigger:
    """A full-input pattern blended in with weight ``alpha`` (Chen et al. 2017).

    ``pattern``: ``noise`` (uniform noise from ``seed``, the paper's random pattern),
    ``stripes`` (vertical bars), ``checkerboard``, or an explicit tensor of the
    input's shape with values inside the bounds.
    """

    alpha: float = 0.2
    pattern: BlendPattern | torch.Tensor = "noise"
    seed: int = 0

    def mask_and_pattern(
        self, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0.0 < self.alpha <= 1.0:
            raise ParameterError(f"alpha must be in (0, 1], got {self.alpha}")
        channels, height, width = image_axes(shape)
        low, high = bounds
        if isinstance(self.pattern, torch.Tensor):
            if tuple(self.pattern.shape) != tuple(shape):
                raise DataError(
                    f"blend pattern has shape {tuple(self.pattern.shape)}, inputs have {shape}"
                )
            plane = self.pattern.float().clone()
        else:
            if self.pattern == "noise":
                unit = torch.rand((channels, height, width), generator=make_generator(self.seed))
            elif self.pattern == "stripes":
                unit = (torch.arange(width) % 2 == 0).float().expand(channels, height, width)
            elif self.pattern == "checkerboard":
                grid = (torch.arange(height)[:, None] + torch.arange(width)[None, :]) % 2 == 0
                unit = grid.float().expand(channels, height, width)
            else:
                raise ParameterError(
                    "pattern must be 'noise', 'stripes', 'checkerboard' or a tensor, "
                    f"got {self.pattern!r}"
                )
            plane = _to_shape((low + unit * (high - low)).contiguous(), shape)
        mask = torch.full(tuple(shape), float(self.alpha))
        return mask, plane

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        return _stamp(self, x, bounds)


@dataclass(frozen=True)
class MaskPatternTrigger:
    """An explicit ``mask`` and ``pattern`` (e.g. a trigger reverse-engineered by Neural
    Cleanse)."""

    mask: torch.Tensor
    pattern: torch.Tensor

    def mask_and_pattern(
        self, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(self.pattern.shape) != tuple(shape):
            raise DataError(
                f"trigger pattern has shape {tuple(self.pattern.shape)}, inputs have {shape}"
            )
        try:
            mask = self.mask.expand(shape)
        except RuntimeError as exc:
            raise DataError(
                f"trigger mask of shape {tuple(self.mask.shape)} does not fit inputs of "
                f"shape {shape}"
            ) from exc
        return mask, self.pattern

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        return _stamp(self, x, bounds)


@dataclass(frozen=True)
class AdditiveTrigger:
    """``x + delta`` clipped to the bounds (e.g. a universal perturbation found by a detector)."""

    delta: torch.Tensor

    def mask_and_pattern(
        self, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise DataError("an additive trigger has no mask; use apply()")

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        if tuple(self.delta.shape) != tuple(x.shape[1:]):
            raise DataError(
                f"perturbation has shape {tuple(self.delta.shape)}, "
                f"inputs have {tuple(x.shape[1:])}"
            )
        return (x + self.delta.to(x.device, x.dtype)).clamp(bounds[0], bounds[1])
