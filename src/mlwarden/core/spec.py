"""`InputSpec`: what a model expects, checked at every boundary.

The spec travels with a model (it is stored in the metadata of mlwarden's
``.pt2`` files and in ``mlwarden.toml``) so that attacks respect the input
domain, loaders reject data of the wrong shape, and the gateway validates
requests without extra configuration. A file that does not carry one (a plain
``torch.export`` or ONNX file) says part of it, and its user the rest: `SpecOverride`
holds what a user knows and `complete_spec` is the one merge of the two. No torch
import at module level.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlwarden.core.errors import DataError, ModelLoadError

if TYPE_CHECKING:
    import torch

_DTYPES = {"float32", "float64", "float16", "bfloat16"}
DEFAULT_BOUNDS = (0.0, 1.0)
"""Bounds assumed when neither the model file nor the user says (see `complete_spec`)."""


def _check_shape(v: tuple[int, ...]) -> tuple[int, ...]:
    if not v or any(d <= 0 for d in v):
        raise ValueError(f"shape must be non-empty with positive sizes, got {v}")
    return v


def _check_dtype(v: str) -> str:
    if v not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {v!r}")
    return v


def _check_class_names(v: tuple[str, ...]) -> tuple[str, ...]:
    if len(v) < 2:
        raise ValueError("a classifier needs at least 2 class names")
    return v


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"bounds must be finite with low < high, got {bounds}")
    return bounds


def _check_normalisation(
    mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channels: int | None
) -> None:
    """mean/std come together, positive std, 1 or ``channels`` values (unknown: any count)."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if mean is None or std is None:
        return
    for name, vals in (("mean", mean), ("std", std)):
        if channels is not None and len(vals) not in (1, channels):
            allowed = "1 value" if channels == 1 else f"1 or {channels} values"
            raise ValueError(f"{name} needs {allowed} (one per channel), got {len(vals)}")
        if not vals:
            raise ValueError(f"{name} needs at least one value")
    if any(s <= 0 for s in std):
        raise ValueError("std values must be positive")


# Field types shared by the full spec and a partial one, so both check a value the same way.
Shape = Annotated[tuple[int, ...], AfterValidator(_check_shape)]
DType = Annotated[str, AfterValidator(_check_dtype)]
Bounds = Annotated[tuple[float, float], AfterValidator(_check_bounds)]
ClassNames = Annotated[tuple[str, ...], AfterValidator(_check_class_names)]


class InputSpec(BaseModel):
    """Shape (without batch), dtype, value bounds, classes and normalisation of a model's input.

    ``mean``/``std`` describe a per-channel normalisation (channel = first axis of
    ``shape``) that the `Classifier` applies *inside* the model, so attacks and
    bounds always work in the raw input space the user sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Shape = Field(description="input shape without the batch axis")
    dtype: DType = "float32"
    bounds: Bounds = DEFAULT_BOUNDS
    class_names: ClassNames = Field(description="one name per output class")
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        _check_normalisation(self.mean, self.std, self.shape[0])
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


class SpecOverride(BaseModel):
    """Part of an `InputSpec`: the fields a user knows, merged over what the model file says.

    A plain ``torch.export`` or ONNX file states its input shape and class count but not
    its value bounds, so its user typically gives only ``{"bounds": [0, 255]}`` (perhaps
    mean/std or class names). Every field is optional; `complete_spec` fills in the rest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Shape | None = None
    dtype: DType | None = None
    bounds: Bounds | None = None
    class_names: ClassNames | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SpecOverride:
        _check_normalisation(self.mean, self.std, self.shape[0] if self.shape else None)
        return self

    def given(self) -> dict[str, Any]:
        """The fields this override sets (``None`` means "not given")."""
        return {key: value for key, value in self if value is not None}


SpecInput = InputSpec | SpecOverride
"""What a caller may pass as ``spec=``: a whole spec, or the part of one that it knows."""

_HOW = "spec=, --spec or a [spec] table in mlwarden.toml"


def bounds_assumption(bounds: tuple[float, float] = DEFAULT_BOUNDS) -> str:
    """The note a model carries in ``spec_assumptions`` when its bounds were assumed."""
    return f"value bounds [{bounds[0]:g}, {bounds[1]:g}] assumed (the file does not say)"


def complete_spec(
    given: SpecInput | None,
    *,
    source: str,
    stored: InputSpec | None = None,
    shape: tuple[int | None, ...] | None = None,
    num_classes: int | None = None,
    stored_assumed: tuple[str, ...] = (),
) -> tuple[InputSpec, tuple[str, ...]]:
    """The spec of the model file ``source`` and what had to be assumed to complete it.

    Each field comes from the user (``given``; a whole `InputSpec` replaces everything),
    else from the spec stored in the file, else from its graph: ``shape`` (non-batch input
    sizes, ``None`` for a dynamic one) and ``num_classes`` (the output size; class names
    become ``"0" .. "C-1"``). Bounds that nobody states are `DEFAULT_BOUNDS` and listed in
    the assumptions, so reports can say so. ``stored_assumed`` are the assumptions the file
    itself records (a student saved from a model whose bounds were assumed): they hold until
    the user states the bounds. A spec that contradicts the graph is refused.
    """
    assumed: list[str] = []
    if isinstance(given, InputSpec):
        spec = given
    else:
        fields: dict[str, Any] = stored.model_dump() if stored is not None else {}
        fields.update(given.given() if given is not None else {})
        if "shape" not in fields:
            if shape is None:
                raise ModelLoadError(
                    f"'{source}' carries no input spec; give at least its input shape and "
                    f"class names ({_HOW})"
                )
            if None in shape:
                raise ModelLoadError(
                    f"'{source}' takes inputs of shape (N, {_dims(shape)}) with a dynamic "
                    f"dimension; give the input shape in the spec ({_HOW})"
                )
            fields["shape"] = shape
        if "class_names" not in fields:
            if num_classes is None:
                raise ModelLoadError(
                    f"'{source}' does not say how many classes it scores; give class_names in "
                    f"the spec ({_HOW})"
                )
            fields["class_names"] = tuple(str(i) for i in range(num_classes))
        if "bounds" not in fields:
            fields["bounds"] = DEFAULT_BOUNDS
            assumed.append(bounds_assumption())
        elif given is None or "bounds" not in given.given():
            assumed.extend(note for note in stored_assumed if note not in assumed)
        try:
            spec = InputSpec(**fields)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ModelLoadError(
                f"the input spec for '{source}' is invalid: "
                f"{where + ': ' if where else ''}{problem['msg'].removeprefix('Value error, ')}"
            ) from None
    if shape is not None and (
        len(shape) != len(spec.shape)
        or any(d is not None and d != s for d, s in zip(shape, spec.shape, strict=False))
    ):
        raise ModelLoadError(
            f"'{source}' takes inputs of shape (N, {_dims(shape)}) but the spec says "
            f"(N, {_dims(spec.shape)})"
        )
    if num_classes is not None and num_classes != spec.num_classes:
        raise ModelLoadError(
            f"'{source}' outputs {num_classes} class scores but the spec names "
            f"{spec.num_classes} classes"
        )
    return spec, tuple(assumed)


def _dims(shape: tuple[int | None, ...]) -> str:
    return ", ".join("?" if d is None else str(d) for d in shape)
