"""Load a model from a file into a `Classifier` (white-box) or an `Oracle` (black-box).

Three formats, chosen by the file's suffix:

* ``.pt2``: a ``torch.export`` program. No user code runs; the graph is
  unflattened (`torch.export.unflatten`) so that forward hooks on submodules fire,
  which `Classifier.features` and feature-based detectors rely on. The `InputSpec`
  travels inside the archive (``mlwarden/spec.json``, written by `save_pt2`).
* weights (``.safetensors``, ``.pt``, ``.pth``, ``.bin``, ``.ckpt``) plus a factory
  ``package.module:callable`` that builds the architecture; keys and shapes must
  match exactly.
* ``.onnx``: a black-box `OnnxOracle` on onnxruntime.

Every file passes `mlwarden.io.gate.ensure_safe` first.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import ModelLoadError, UnsafeArtefactError, first_line
from mlwarden.core.spec import InputSpec
from mlwarden.io.gate import PICKLE_SUFFIXES, ensure_safe, resolve_allowed

if TYPE_CHECKING:
    from mlwarden.core.oracle import Oracle

SPEC_EXTRA = "mlwarden/spec.json"
"""Name of the extra file inside a ``.pt2`` archive that holds the `InputSpec` as JSON."""
SPEC_METADATA_KEY = "mlwarden.spec"
"""Metadata key of the `InputSpec` in ``.safetensors`` headers and ONNX ``metadata_props``."""

WEIGHT_SUFFIXES = (".safetensors", *(s for s in PICKLE_SUFFIXES if s not in (".pkl", ".pickle")))
MODEL_SUFFIXES = (".pt2", ".onnx", *WEIGHT_SUFFIXES)
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model_state", "model")
_WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
_MAX_LISTED = 8


def load_model(
    source: str | Path,
    *,
    factory: str | None = None,
    spec: InputSpec | None = None,
    device: str = "auto",
    allow: Sequence[str] = (),
) -> Classifier | Oracle:
    """Load ``source`` after the safety gate; ``spec`` overrides any stored spec.

    Returns a `Classifier` for ``.pt2`` and factory+weights, an `OnnxOracle` for ``.onnx``.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        if path.is_dir():
            raise ModelLoadError(f"model path '{path}' is a directory; give the model file itself")
        raise ModelLoadError(
            f"unknown model format '{suffix or path.name}' for '{path}'; "
            f"use one of {', '.join(MODEL_SUFFIXES)}"
        )
    if factory is not None and suffix in (".pt2", ".onnx"):
        raise ModelLoadError(
            f"a factory only applies to weights files ({', '.join(WEIGHT_SUFFIXES)}); "
            f"'{path.name}' carries its own architecture, drop the factory"
        )
    path = ensure_safe(path, allow=allow)
    if suffix == ".onnx":
        from mlwarden.io.onnx_oracle import OnnxOracle

        return OnnxOracle(path, spec=spec)
    if suffix == ".pt2":
        return load_pt2(path, spec=spec, device=device)
    if factory is None:
        raise ModelLoadError(
            f"'{path.name}' holds only weights; name the architecture with a factory "
            "such as 'mlwarden.models:SmallCNN' (factory=, --factory or [model] factory)"
        )
    return load_weights(path, factory, spec=spec, device=device, allow=allow)


# -- torch.export programs -----------------------------------------------------------------
def load_pt2(
    path: str | Path, *, spec: InputSpec | None = None, device: str = "auto"
) -> Classifier:
    """Load a ``.pt2`` program (already gated) into a `Classifier`.

    Call `load_model` instead unless the file has passed `ensure_safe`.
    """
    from mlwarden.core.device import resolve_device

    path = Path(path)
    extra = {SPEC_EXTRA: ""}
    try:
        with _quiet_torch_export():
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - zip, json, schema and version errors alike
        raise ModelLoadError(
            f"cannot read '{path}' as a torch.export program (corrupt, truncated or written by "
            f"an incompatible torch): {first_line(exc)}"
        ) from exc
    if spec is None:
        spec = _spec_from_json(extra.get(SPEC_EXTRA) or "", path)
    input_node = _single_input(program, path)
    _check_program_input(input_node, spec, path)
    batch_range = _batch_range(program, input_node)
    target = resolve_device(device)
    if target.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, target)
    module = _unflatten(program)
    if batch_range == (1, None):
        return ExportedClassifier(module, spec, device=target, name=path.stem)
    return BatchConstrainedClassifier(module, spec, batch_range, device=target, name=path.stem)


def _unflatten(program: Any) -> nn.Module:
    """Unflatten so submodule calls (and their hooks) survive; ``module()`` inlines them.

    Gradients flow through both; unflattened is ~2x slower per call on tiny models,
    which hooks are worth. Programs that cannot be unflattened fall back to the
    inlined module (`Classifier.features` then says the layer is not called).
    """
    try:
        with _quiet_torch_export():
            module = torch.export.unflatten(program)
    except Exception:  # noqa: BLE001 - unusual graphs: keep a working, hook-less module
        return program.module()
    # Fine-tuning and fine-pruning deep-copy the teacher; the input guard's metadata holds
    # fake tensors with symbolic sizes that cannot be copied. Share it (it is read-only).
    object.__setattr__(module, "__deepcopy__", types.MethodType(_deepcopy_unflattened, module))
    return module


def _deepcopy_unflattened(self: nn.Module, memo: dict[int, Any]) -> nn.Module:
    shared: list[Any] = [getattr(self, "meta", None), *getattr(self, "input_placeholders", ())]
    for item in shared:
        if item is not None:
            memo[id(item)] = item
    clone = type(self).__new__(type(self))
    memo[id(self)] = clone
    for key, value in self.__dict__.items():
        if key == "__deepcopy__":
            continue
        clone.__dict__[key] = copy.deepcopy(value, memo)
    object.__setattr__(clone, "__deepcopy__", types.MethodType(_deepcopy_unflattened, clone))
    return clone


def _single_input(program: Any, path: Path) -> Any:
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise ModelLoadError(
            f"'{path.name}' takes {len(names)} inputs ({', '.join(names)}); mlwarden needs a "
            "program with exactly one input batch"
        )
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            return node
    raise ModelLoadError(f"'{path.name}' has no placeholder for its input '{names[0]}'")


def _check_program_input(node: Any, spec: InputSpec, path: Path) -> None:
    val = node.meta.get("val")
    if val is None or not hasattr(val, "shape"):
        return
    got = tuple(val.shape[1:])
    dims = tuple(int(d) if isinstance(d, int) else "dynamic" for d in got)
    if len(got) != len(spec.shape) or any(
        isinstance(d, int) and d != s for d, s in zip(got, spec.shape, strict=False)
    ):
        raise ModelLoadError(
            f"'{path.name}' was exported for inputs of shape (N, {', '.join(map(str, dims))}) "
            f"but the spec says (N, {', '.join(map(str, spec.shape))})"
        )
    if getattr(val, "dtype", torch.float32) != torch.float32:
        raise ModelLoadError(
            f"'{path.name}' was exported for {val.dtype} inputs; export it with float32 inputs"
        )


def _batch_range(program: Any, node: Any) -> tuple[int, int | None]:
    """Batch sizes the program's guards accept: ``(lo, hi)``; ``hi=None`` is unbounded."""
    val = node.meta.get("val")
    if val is None or not hasattr(val, "shape") or len(val.shape) == 0:
        return (1, None)
    dim = val.shape[0]
    if isinstance(dim, int):
        return (dim, dim)
    ranges = program.range_constraints.get(dim.node.expr)
    if ranges is None:
        return (1, None)
    lo = max(1, int(ranges.lower))
    upper = ranges.upper
    hi: int | None = None
    if getattr(upper, "is_finite", True) is not False:  # sympy's int_oo is not finite
        try:
            hi = int(upper)
        except (TypeError, ValueError, OverflowError, AttributeError):
            hi = None
    if hi is not None and hi > 2**40:
        hi = None
    return (lo, hi)


class ExportedClassifier(Classifier):
    """A `Classifier` around an unflattened ``torch.export`` program.

    Its submodules are graph interpreters, not ``nn.Linear``/``nn.Dropout``;
    `mlwarden.core.layers` recognises their roles by weight shapes and aten ops.
    """


class BatchConstrainedClassifier(ExportedClassifier):
    """A `Classifier` whose program only accepts some batch sizes (e.g. exported with a fixed one).

    Any batch is cut into chunks the program accepts; a short chunk is padded with
    copies of its last sample (detached, so gradients of real samples are
    untouched) and the padded rows are dropped from the output.
    """

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        batch_range: tuple[int, int | None],
        *,
        device: torch.device | str | None = None,
        name: str = "model",
    ) -> None:
        super().__init__(module, spec, device=device, name=name)
        self.batch_range = batch_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.batch_range
        n = len(x)
        if n == 0:
            return x.new_zeros((0, self.num_classes))
        if n >= lo and (hi is None or n <= hi):
            return super().forward(x)
        step = hi if hi is not None else max(n, lo)
        outs = []
        for start in range(0, n, step):
            chunk = x[start : start + step]
            k = len(chunk)
            outs.append(super().forward(_pad_rows(chunk, lo))[:k])
        return torch.cat(outs)

    def features(
        self, x: torch.Tensor, layer: str, batch_size: int | None = 256, *, flatten: bool = True
    ) -> torch.Tensor:
        """As `Classifier.features`, feeding the layer only batch sizes the program accepts."""
        x = self._prepare(x)
        n = len(x)
        if n == 0:
            return super().features(x, layer, batch_size, flatten=flatten)
        lo, hi = self.batch_range
        step = hi if hi is not None else max(batch_size or n, lo)
        total = -(-n // step) * step if hi is not None else n
        if hi is None and n % step and n % step < lo:
            total = n + lo - n % step
        padded = _pad_rows(x, total)
        return super().features(padded, layer, step, flatten=flatten)[:n]


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    if len(x) >= size:
        return x
    pad = x[-1:].detach().expand(size - len(x), *x.shape[1:])
    return torch.cat([x, pad])


# -- factory + weights -----------------------------------------------------------------------
def load_weights(
    path: str | Path,
    factory: str,
    *,
    spec: InputSpec | None = None,
    device: str = "auto",
    allow: Sequence[str] = (),
) -> Classifier:
    """Build ``factory()`` and load the (already gated) weights file strictly into it."""
    from mlwarden.core.device import resolve_device

    path = Path(path)
    state, stored_spec = read_state_dict(path, allow=allow)
    spec = spec or stored_spec
    if spec is None:
        raise ModelLoadError(
            f"'{path.name}' carries no input spec; pass one with the input shape and class "
            "names (spec=, --spec or a [spec] table in mlwarden.toml)"
        )
    module = build_from_factory(factory)
    state = _match_state_dict(module, state, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype or other mismatch not caught above
        raise ModelLoadError(
            f"weights in '{path.name}' do not fit {factory}: {first_line(exc)}"
        ) from exc
    return Classifier(module, spec, device=resolve_device(device), name=path.stem)


def build_from_factory(factory: str) -> nn.Module:
    """Import ``package.module:callable`` and call it with no arguments.

    Importing runs the named module's code: that is the user's explicit choice,
    unlike a pickle, which imports whatever the file says.
    """
    import importlib

    if factory.count(":") != 1 or not all(factory.split(":")):
        raise ModelLoadError(
            f"factory '{factory}' must look like 'package.module:callable' "
            "(e.g. 'mlwarden.models:SmallCNN')"
        )
    module_name, attr_path = factory.split(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"factory '{factory}': module '{exc.name or module_name}' is not installed "
            "or not on the Python path"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ModelLoadError(
            f"factory '{factory}': importing '{module_name}' raised "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise ModelLoadError(
                f"factory '{factory}': '{module_name}' has no attribute '{attr_path}'"
            )
        target = getattr(target, attr)
    if not callable(target):
        raise ModelLoadError(f"factory '{factory}' is a {type(target).__name__}, not callable")
    try:
        module = target()
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a load error
        raise ModelLoadError(
            f"factory '{factory}' raised {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"factory '{factory}' returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def read_state_dict(
    path: str | Path, *, allow: Sequence[str] = ()
) -> tuple[dict[str, torch.Tensor], InputSpec | None]:
    """Tensors of a weights file (already gated) and the spec stored with them, if any."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    allowed = resolve_allowed(allow)  # a bad entry is the user's error, not the file's
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - map every failure to one clear line
        import pickle

        if isinstance(exc, pickle.UnpicklingError):
            reason = _unpickler_reason(exc)
            raise UnsafeArtefactError(
                f"refused '{path}': the weights-only unpickler rejected it ({reason})"
            ) from exc
        raise ModelLoadError(
            f"'{path}' is not a readable PyTorch file (corrupt or truncated): {first_line(exc)}"
        ) from exc
    return _state_dict_from_checkpoint(obj, path), None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], InputSpec | None]:
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[key] = fh.get_tensor(key)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, header errors
        raise ModelLoadError(
            f"'{path}' is not a readable safetensors file (corrupt or truncated): "
            f"{first_line(exc)}"
        ) from exc
    stored = metadata.get(SPEC_METADATA_KEY)
    return tensors, (_spec_from_json(stored, path) if stored else None)


def _state_dict_from_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not _all_tensors(obj):
        for key in _CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and _all_tensors(inner):
                obj = inner
                break
        else:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise ModelLoadError(
                f"'{path.name}' is a dict but not a state dict: entries "
                f"{_listing([str(k) for k in bad])} are not tensors and none of "
                f"{', '.join(_CHECKPOINT_KEYS)} holds one"
            )
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError(
            f"'{path.name}' holds a {type(obj).__name__}, not a state dict of tensors"
        )
    return {str(k): v for k, v in obj.items()}


def _all_tensors(obj: dict[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _match_state_dict(
    module: nn.Module, state: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Check keys and shapes strictly; strip one wrapper prefix (DDP's ``module.``) if that
    makes every key match exactly."""
    expected = module.state_dict()
    if set(state) != set(expected):
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                stripped = {k[len(prefix) :]: v for k, v in state.items()}
                if set(stripped) == set(expected):
                    state = stripped
                    break
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        problems.append(f"shape mismatches (file vs model) {_listing(wrong)}")
    if problems:
        raise ModelLoadError(
            f"weights in '{path.name}' do not match the architecture: " + "; ".join(problems)
        )
    return state


# -- helpers -------------------------------------------------------------------------------
def _spec_from_json(text: str, path: Path) -> InputSpec:
    if not text:
        raise ModelLoadError(
            f"'{path.name}' carries no mlwarden input spec; pass one (spec=, --spec or a "
            "[spec] table in mlwarden.toml), or save the model with mlwarden.io.save_pt2"
        )
    try:
        return InputSpec.model_validate_json(text)
    except Exception as exc:  # noqa: BLE001 - pydantic ValidationError or bad JSON
        raise ModelLoadError(
            f"the input spec stored in '{path.name}' is invalid: {first_line(exc)}"
        ) from exc


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs tracebacks and warnings on bad files; we raise one clear error."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")



__all__ = [
    "BatchConstrainedClassifier",
    "ExportedClassifier",
    "MODEL_SUFFIXES",
    "SPEC_EXTRA",
    "SPEC_METADATA_KEY",
    "build_from_factory",
    "load_model",
    "load_pt2",
    "load_weights",
    "read_state_dict",
]


def _unpickler_reason(exc: BaseException) -> str:
    """torch wraps the real reason (e.g. the unsupported global) in a long help text."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        for line in text.split(marker, 1)[1].strip().splitlines():
            if line.strip():
                return line.strip()[:200]
    return first_line(exc)
