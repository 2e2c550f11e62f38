"""Write models in the formats `load_model` reads back: ``.pt2``, ``.safetensors``, ``.onnx``.

Each format carries the `InputSpec`, so a loaded model knows its input shape,
bounds, classes and normalisation without extra flags:

* ``.pt2``: ``classifier.module`` (without normalisation; the loader's `Classifier`
  re-applies it) exported with a dynamic batch axis, spec in ``mlwarden/spec.json``;
* ``.safetensors``: the state dict, spec in the header metadata;
* ``.onnx``: the whole classifier *including* normalisation (an ONNX model is a
  black box fed raw inputs), logits out, spec in ``metadata_props``.

Files are written to a temporary sibling and renamed, so a failed export never
leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import InputError, ParameterError, first_line, require
from mlwarden.core.spec import InputSpec
from mlwarden.io.models import (
    ASSUMED_EXTRA,
    ASSUMED_METADATA_KEY,
    SPEC_EXTRA,
    SPEC_METADATA_KEY,
)

ONNX_OUTPUT_KEY = "mlwarden.output"
"""ONNX metadata: ``logits`` or ``probabilities`` (what the graph's output holds)."""
ONNX_NORMALIZATION_KEY = "mlwarden.normalization"
"""ONNX metadata: ``in-graph`` when the spec's mean/std are already applied by the graph."""


def save_pt2(
    classifier: Classifier,
    path: str | Path,
    *,
    example: torch.Tensor | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``classifier.module`` in eval mode as a ``torch.export`` program.

    ``example`` is one input batch (default: a fixed pseudo-random batch inside the
    spec's bounds). ``dynamic_batch=False`` pins the batch size to ``len(example)``,
    for runtimes that need static shapes; the loader pads batches for such files.
    """
    path = _suffix(path, ".pt2")
    spec = classifier.spec
    example = _example(spec, example, classifier.device)
    if dynamic_batch and len(example) < 2:  # batch 1 would be specialised away
        example = example.expand(2, *example.shape[1:]).clone()
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = _batch_dynamic_shapes(classifier.module)
    with classifier.evaluating(), _quiet():
        try:
            program = torch.export.export(
                classifier.module, (example,), dynamic_shapes=dynamic_shapes, strict=False
            )
        except Exception as exc:  # noqa: BLE001 - export errors are long; keep the gist
            hint = "retry with dynamic_batch=False" if dynamic_batch else None
            raise InputError(
                f"torch.export could not export '{classifier.name}': {first_line(exc)}",
                hint=hint,
            ) from exc
    extra = {SPEC_EXTRA: spec.model_dump_json(), **_assumed(classifier, ASSUMED_EXTRA)}
    with _atomic(path) as tmp:
        torch.export.save(program, str(tmp), extra_files=extra)
    return path


def _batch_dynamic_shapes(module: nn.Module) -> tuple[Any, ...]:
    """A dynamic batch axis for ``module``'s one input, in the structure export expects.

    A module rebuilt from a ``.pt2`` program (a student of a loaded teacher) is an
    unflattened graph whose ``forward(*args, **kwargs)`` receives the batch inside the
    ``args`` tuple, so its shapes nest one level deeper than a plain ``forward(x)``'s.
    """
    import inspect

    batch = {0: torch.export.Dim("batch", min=1)}
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return ((batch,),)
    return (batch,)


def _assumed(model: object, key: str) -> dict[str, str]:
    """``{key: JSON list}`` of what ``model``'s spec assumed, so a reload still says so."""
    import json

    notes = tuple(getattr(model, "spec_assumptions", ()) or ())
    return {key: json.dumps(list(notes))} if notes else {}


def save_weights(module: nn.Module, path: str | Path, *, spec: InputSpec | None = None) -> Path:
    """Save a state dict as ``.safetensors`` (no pickle), with ``spec`` in the metadata.

    A `Classifier` is saved as its inner module, so the keys match the factory that
    builds the architecture; its spec is stored unless ``spec`` overrides it.
    """
    from safetensors.torch import save_file

    path = _suffix(path, ".safetensors")
    assumed: dict[str, str] = {}
    if isinstance(module, Classifier):
        if spec is None:
            spec, assumed = module.spec, _assumed(module, ASSUMED_METADATA_KEY)
        module = module.module
    # Clones break storage sharing (tied weights), which safetensors refuses to save.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {SPEC_METADATA_KEY: spec.model_dump_json(), **assumed} if spec is not None else None
    with _atomic(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def export_onnx(classifier: Classifier, path: str | Path, *, opset: int | None = None) -> Path:
    """Export the classifier (normalisation included) to ONNX: logits out, dynamic batch.

    Uses torch's TorchScript-based exporter, which works offline with just ``onnx``;
    the newer dynamo exporter needs ``onnxscript`` and is used only when the former is
    gone from torch.
    """
    onnx = require("onnx", "onnx")
    path = _suffix(path, ".onnx")
    spec = classifier.spec
    example = _example(spec, None, classifier.device)
    with _atomic(path) as tmp, classifier.evaluating(), _quiet():
        try:
            torch.onnx.export(
                classifier,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        except Exception as exc:  # noqa: BLE001 - retry with the dynamo exporter if present
            if not _has_onnxscript():
                raise InputError(
                    f"ONNX export of '{classifier.name}' failed: {first_line(exc)}"
                ) from exc
            torch.onnx.export(
                classifier,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                opset_version=opset,
                dynamo=True,
            )
        model = onnx.load(str(tmp))
        for key, value in (
            (SPEC_METADATA_KEY, spec.model_dump_json()),
            (ONNX_OUTPUT_KEY, "logits"),
            (ONNX_NORMALIZATION_KEY, "in-graph"),
            *_assumed(classifier, ASSUMED_METADATA_KEY).items(),
        ):
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return path


# -- helpers -------------------------------------------------------------------------------
def _suffix(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ParameterError(f"path '{path}' must end in {suffix}")
    if path.is_dir():
        raise ParameterError(f"path '{path}' is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _example(spec: InputSpec, example: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if example is None:
        gen = torch.Generator().manual_seed(0)
        low, high = spec.bounds
        example = low + (high - low) * torch.rand((2, *spec.shape), generator=gen)
    if example.dim() == len(spec.shape):
        example = example.unsqueeze(0)
    if tuple(example.shape[1:]) != spec.shape or len(example) == 0:
        raise ParameterError(
            f"example has shape {tuple(example.shape)}; expected (N, "
            + ", ".join(map(str, spec.shape))
            + ") with N >= 1"
        )
    return example.detach().to(device, dtype=torch.float32)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path with the same name (torch names a .pt2's archive root after
    it) in a hidden sibling folder; move it into place only on success."""
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = folder / path.name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _has_onnxscript() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxscript") is not None



__all__ = ["ONNX_NORMALIZATION_KEY", "ONNX_OUTPUT_KEY", "export_onnx", "save_pt2", "save_weights"]
