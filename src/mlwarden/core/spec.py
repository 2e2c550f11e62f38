"""`InputSpec`: what a model expects, checked at every boundary.

The spec travels with a model (it is stored in the metadata of mlwarden's
``.pt2`` files and in ``mlwarden.toml``) so that attacks respect the input
domain, loaders reject data of the wrong shape, and the gateway validates
requests without extra configuration. No torch import at module level.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlwarden.core.errors import DataError

if TYPE_CHECKING:
    import torch

_DTYPES = {"float32", "float64", "float16", "bfloat16"}


class InputSpec(BaseModel):
    """Shape (without batch), dtype, value bounds, classes and normalisation of a model's input.

    ``mean``/``std`` describe a per-channel normalisation (channel = first axis of
    ``shape``) that the `Classifier` applies *inside* the model, so attacks and
    bounds always work in the raw input space the user sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...] = Field(description="input shape without the batch axis")
    dtype: str = "float32"
    bounds: tuple[float, float] = (0.0, 1.0)
    class_names: tuple[str, ...] = Field(description="one name per output class")
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @field_validator("shape")
    @classmethod
    def _shape_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(d <= 0 for d in v):
            raise ValueError(f"shape must be non-empty with positive sizes, got {v}")
        return v

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {v!r}")
        return v

    @field_validator("class_names")
    @classmethod
    def _two_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError("a classifier needs at least 2 class names")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        low, high = self.bounds
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError(f"bounds must be finite with low < high, got {self.bounds}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")
        if self.mean is not None and self.std is not None:
            channels = self.shape[0]
            for name, vals in (("mean", self.mean), ("std", self.std)):
                if len(vals) not in (1, channels):
                    raise ValueError(f"{name} needs 1 or {channels} values, got {len(vals)}")
            if any(s <= 0 for s in self.std):
                raise ValueError("std values must be positive")
        return self

    # -- derived ----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def for_classes(cls, shape: tuple[int, ...], num_classes: int, **kw: Any) -> InputSpec:
        """Spec with class names ``"0" .. "n-1"``."""
        return cls(shape=shape, class_names=tuple(str(i) for i in range(num_classes)), **kw)

    # -- checks -----------------------------------------------------------
    def validate_batch(self, x: torch.Tensor, *, what: str = "input") -> None:
        """Raise `DataError` unless ``x`` is a finite batch of this shape inside the bounds."""
        import torch

        if not isinstance(x, torch.Tensor):
            raise DataError(f"{what} must be a tensor, got {type(x).__name__}")
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise DataError(
                f"{what} has shape {tuple(x.shape)}; the model expects (N, "
                + ", ".join(map(str, self.shape))
                + ")"
            )
        if not x.is_floating_point():
            raise DataError(f"{what} must be floating point, got {x.dtype}")
        if x.numel() == 0:
            return
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).flatten(1).any(1).sum())
            raise DataError(f"{what} contains NaN or infinite values in {bad} sample(s)")
        low, high = self.bounds
        tol = 1e-6 * max(1.0, high - low)
        lo_seen, hi_seen = float(x.min()), float(x.max())
        if lo_seen < low - tol or hi_seen > high + tol:
            raise DataError(
                f"{what} values span [{lo_seen:.4g}, {hi_seen:.4g}], outside the input bounds "
                f"[{low:g}, {high:g}]"
            )

    def validate_labels(self, y: torch.Tensor, *, what: str = "labels") -> None:
        """Raise `DataError` unless ``y`` holds integer class indices of this spec."""
        import torch

        if not isinstance(y, torch.Tensor) or y.dim() != 1:
            raise DataError(f"{what} must be a 1-D tensor of class indices")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise DataError(f"{what} must be integers, got {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(
                f"{what} must lie in [0, {self.num_classes - 1}], "
                f"got [{int(y.min())}, {int(y.max())}]"
            )
