"""Turn what a user's test has at hand into a `Classifier` (or `Oracle`) and tensors.

A test should not have to know our wrappers: it may hold its own ``nn.Module`` and
numpy arrays, an already wrapped `Classifier`, or only a model file on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlwarden.core.errors import DataError, ParameterError

if TYPE_CHECKING:
    import torch

    from mlwarden.core.classifier import Classifier
    from mlwarden.core.oracle import Oracle
    from mlwarden.core.spec import SpecInput
    from mlwarden.io.dataset import Dataset


def as_model(
    model: Any,
    *,
    spec: SpecInput | None = None,
    factory: str | None = None,
    allow: Sequence[str] = (),
    device: str = "auto",
) -> Classifier | Oracle:
    """``model`` as a `Classifier` or `Oracle`: the one place the testing helpers resolve it.

    Accepts a `Classifier` or `Oracle` (returned as is), the user's own ``nn.Module`` with
    ``spec`` (`mlwarden.io.from_module`: nothing is exported), or a path that
    `mlwarden.io.load_model` can load (the file is scanned first; an unsafe file raises
    `UnsafeArtefactError`), with ``spec`` merged over what the file says.
    """
    from torch import nn

    from mlwarden.core.contract import is_model

    if is_model(model):
        return model  # type: ignore[no-any-return]
    if isinstance(model, nn.Module):
        if spec is None:
            raise ParameterError(
                "model is a plain nn.Module: pass spec=InputSpec(shape=..., class_names=...) "
                "or spec=SpecOverride(shape=..., bounds=...) so inputs can be validated"
            )
        from mlwarden.io.models import from_module

        return from_module(model, spec, device=None if device == "auto" else device)
    if isinstance(model, (str, Path)):
        from mlwarden.io.models import load_model

        return load_model(model, factory=factory, spec=spec, device=device, allow=allow)
    raise ParameterError(
        f"model must be a Classifier, an Oracle, an nn.Module with spec=, or a model file "
        f"path; got {type(model).__name__}"
    )


def as_tensors(x: Any, y: Any, *, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as float32 inputs and int64 labels of equal length (numpy or torch in)."""
    import numpy as np
    import torch

    def convert(value: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            t = value.detach()
        else:
            try:
                t = torch.as_tensor(np.asarray(value))
            except (TypeError, ValueError) as exc:
                raise DataError(f"{what}: {name} cannot be read as an array: {exc}") from None
        if t.is_floating_point() and dtype == torch.int64:
            if not bool((t == t.round()).all()):
                raise DataError(f"{what}: labels {name} must be integers")
        return t.to(dtype)

    xt = convert(x, "x", torch.float32)
    yt = convert(y, "y", torch.int64)
    if yt.dim() != 1:
        raise DataError(f"{what}: labels y must be 1-D, got shape {tuple(yt.shape)}")
    if len(xt) != len(yt):
        raise DataError(f"{what}: x has {len(xt)} samples but y has {len(yt)}")
    if len(xt) == 0:
        raise DataError(f"{what}: no samples")
    return xt, yt


def as_dataset(data: Any, class_names: tuple[str, ...], *, what: str) -> Dataset:
    """A `Dataset` from a `Dataset` or an ``(x, y)`` pair."""
    from mlwarden.io.dataset import Dataset

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = as_tensors(data[0], data[1], what=what)
        return Dataset(x, y, class_names, name=what)
    raise ParameterError(f"{what} must be a Dataset or an (x, y) pair, got {type(data).__name__}")
