"""Load a model from a file into a `Classifier` (white-box) or an `Oracle` (black-box).

Three formats, chosen by the file's suffix:

* ``.pt2``: a ``torch.export`` program. No user code runs; the graph is
  unflattened (`torch.export.unflatten`) so that forward hooks on submodules fire,
  which `Classifier.features` and feature-based detectors rely on. The `InputSpec`
  travels inside the archive (``mlwarden/spec.json``, written by `save_pt2`); a plain
  export without it gives its input shape and class count, and bounds are assumed.
* weights (``.safetensors``, ``.pt``, ``.pth``, ``.bin``, ``.ckpt``) plus a factory
  ``package.module:callable`` that builds the architecture; keys and shapes must
  match exactly.
* ``.onnx``: a black-box `OnnxOracle` on onnxruntime.
* a Hugging Face model folder (``config.json`` inside): a `TextClassifier` or a
  `TextEncoder` (`mlwarden.io.hf`); the whole folder passes the gate first.

A user's spec (whole, or a `SpecOverride` with the fields they know) is merged over
what the file says by `mlwarden.core.spec.complete_spec`. A Python user's own module
becomes a `Classifier` with `from_module`, no file involved. Every file passes
`mlwarden.io.gate.ensure_safe` first.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import nn

from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import ModelLoadError, ParameterError, UnsafeArtefactError, first_line
from mlwarden.core.spec import InputSpec, SpecInput, SpecOverride, complete_spec
from mlwarden.io.gate import PICKLE_SUFFIXES, ensure_safe, resolve_allowed

if TYPE_CHECKING:
    from mlwarden.core.oracle import Oracle
    from mlwarden.core.text import TextClassifier, TextEncoder

SPEC_EXTRA = "mlwarden/spec.json"
"""Name of the extra file inside a ``.pt2`` archive that holds the `InputSpec` as JSON."""
SPEC_METADATA_KEY = "mlwarden.spec"
ASSUMED_EXTRA = "mlwarden/spec_assumed.json"
"""Extra file of a ``.pt2`` archive listing what its stored spec assumed (a JSON list)."""
ASSUMED_METADATA_KEY = "mlwarden.spec_assumed"
"""The same list in ``.safetensors`` headers and ONNX ``metadata_props``.

Without it, a student trained from a model whose bounds were assumed would be saved with
those bounds as if they were known, and the next load would report nothing assumed."""
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
    spec: SpecInput | None = None,
    device: str = "auto",
    allow: Sequence[str] = (),
) -> Classifier | Oracle | TextClassifier | TextEncoder:
    """Load ``source`` after the safety gate.

    ``spec`` is a whole `InputSpec` (replaces what the file says) or a `SpecOverride`
    (its fields win over the file's; see `mlwarden.core.spec.complete_spec`). Returns a
    `Classifier` for ``.pt2`` and factory+weights, an `OnnxOracle` for ``.onnx``, a
    `TextClassifier` or `TextEncoder` for a Hugging Face folder (whose own config is its
    spec).
    """
    path = Path(source)
    from mlwarden.supplychain.encryption import is_encrypted

    if is_encrypted(path):  # `mlwarden encrypt`: gated and loaded from memory
        from mlwarden.io.encrypted import load_encrypted

        return load_encrypted(path, factory=factory, spec=spec, device=device, allow=allow)
    suffix = path.suffix.lower()
    if path.is_dir():
        return _load_folder(path, factory=factory, spec=spec, device=device, allow=allow)
    if suffix not in MODEL_SUFFIXES:
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


def _load_folder(
    path: Path,
    *,
    factory: str | None,
    spec: SpecInput | None,
    device: str,
    allow: Sequence[str],
) -> TextClassifier | TextEncoder:
    from mlwarden.io.hf import is_hf_folder, load_hf_folder

    if not is_hf_folder(path):
        raise ModelLoadError(
            f"model path '{path}' is a folder without config.json; give a model file, "
            "or a Hugging Face model folder"
        )
    if factory is not None:
        raise ModelLoadError(
            f"a factory only applies to weights files; the folder '{path.name}' names its "
            "architecture in config.json, drop the factory"
        )
    if spec is not None:
        raise ModelLoadError(
            f"an input spec applies to tensor models; the folder '{path.name}' takes text and "
            "its config.json and tokenizer are its spec, drop the spec"
        )
    return load_hf_folder(path, device=device, allow=allow)


def from_module(
    module: nn.Module,
    spec: SpecInput,
    *,
    name: str | None = None,
    device: str | None = None,
) -> Classifier:
    """A `Classifier` around the user's own ``module``, nothing exported or saved.

    ``spec`` is a whole `InputSpec`, or a `SpecOverride` with at least the input shape;
    the class count is then read from one forward pass on a dummy batch, and bounds not
    given are assumed (and recorded in ``spec_assumptions``).
    """
    if isinstance(module, Classifier):
        return module
    if not isinstance(module, nn.Module):
        raise ParameterError(f"expected a torch.nn.Module, got {type(module).__name__}")
    label = name or type(module).__name__
    num_classes = None
    if isinstance(spec, SpecOverride) and spec.class_names is None and spec.shape is not None:
        num_classes = _probe_classes(module, spec.shape, label)
    full, assumed = complete_spec(spec, source=label, num_classes=num_classes)
    return Classifier(module, full, device=device, name=label, spec_assumptions=assumed)


def _probe_classes(module: nn.Module, shape: tuple[int, ...], name: str) -> int:
    """The output size of ``module`` on two zero inputs, in eval mode, without gradients."""
    modes = {mod: mod.training for mod in module.modules()}
    for mod in modes:
        mod.training = False
    try:
        param = next(iter(module.parameters()), None)
        where = param.device if param is not None else torch.device("cpu")
        with torch.inference_mode():
            out = module(torch.zeros((2, *shape), device=where))
    except Exception as exc:  # noqa: BLE001 - any failure of user code names the module
        raise ParameterError(
            f"'{name}' failed on a batch of shape (2, {', '.join(map(str, shape))}): "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    finally:
        for mod, training in modes.items():
            mod.training = training
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ParameterError(f"'{name}' returned {got}; expected (N, C) logits")
    return int(out.shape[1])


# -- torch.export programs -----------------------------------------------------------------
def load_pt2(
    path: str | Path,
    *,
    spec: InputSpec | None = None,
    device: str = "auto",
    data: BinaryIO | None = None,
) -> Classifier:
    """Load a ``.pt2`` program (already gated) into a `Classifier`.

    Call `load_model` instead unless the file has passed `ensure_safe`. ``data`` is the
    program in memory (a decrypted file); ``path`` then only names it.
    """
    from mlwarden.core.device import resolve_device

    path = Path(path)
    extra = {SPEC_EXTRA: "", ASSUMED_EXTRA: ""}
    try:
        with _quiet_torch_export():
            program = torch.export.load(data if data is not None else str(path), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - zip, json, schema and version errors alike
        raise ModelLoadError(
            f"cannot read '{path}' as a torch.export program (corrupt, truncated or written by "
            f"an incompatible torch): {first_line(exc)}"
        ) from exc
    stored_json = extra.get(SPEC_EXTRA) or ""
    stored = _spec_from_json(stored_json, path) if stored_json else None
    input_node = _single_input(program, path)
    _check_input_dtype(input_node, path)
    spec, assumed = complete_spec(
        spec,
        source=path.name,
        stored=stored,
        shape=_program_input_shape(input_node),
        num_classes=_program_num_classes(program),
        stored_assumed=assumed_from_json(extra.get(ASSUMED_EXTRA) or "", path),
    )
    batch_range = _batch_range(program, input_node)
    target = resolve_device(device)
    if target.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, target)
    module = _unflatten(program)
    named = {"device": target, "name": path.stem, "spec_assumptions": assumed}
    if batch_range == (1, None):
        return ExportedClassifier(module, spec, **named)
    return BatchConstrainedClassifier(module, spec, batch_range, **named)


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


def _program_input_shape(node: Any) -> tuple[int | None, ...] | None:
    """Non-batch input sizes the program was exported for; ``None`` for a dynamic one."""
    val = node.meta.get("val")
    if val is None or not hasattr(val, "shape") or len(val.shape) == 0:
        return None
    return tuple(d if isinstance(d, int) else None for d in val.shape[1:])


def _program_num_classes(program: Any) -> int | None:
    """The last output size of the program's single output, if it is static."""
    outputs = [n for n in program.graph.nodes if n.op == "output"]
    if len(outputs) != 1 or not outputs[0].args:
        return None
    results = outputs[0].args[0]
    results = results if isinstance(results, (tuple, list)) else (results,)
    user = len(program.graph_signature.user_outputs)
    if user != 1:
        return None
    val = getattr(results[-1], "meta", {}).get("val")
    if val is None or not hasattr(val, "shape") or len(val.shape) < 2:
        return None
    last = val.shape[-1]
    return last if isinstance(last, int) else None


def _check_input_dtype(node: Any, path: Path) -> None:
    val = node.meta.get("val")
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
        spec_assumptions: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            module, spec, device=device, name=name, spec_assumptions=spec_assumptions
        )
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
    spec: SpecInput | None = None,
    device: str = "auto",
    allow: Sequence[str] = (),
    data: BinaryIO | None = None,
) -> Classifier:
    """Build ``factory()`` and load the (already gated) weights file strictly into it.

    A weights file says nothing of its inputs unless mlwarden stored a spec with it, so
    ``spec`` must then give at least the shape and class names. ``data`` is the file in
    memory (a decrypted one); ``path`` then only names it.
    """
    from mlwarden.core.device import resolve_device

    path = Path(path)
    state, stored_spec = read_state_dict(path, allow=allow, data=data)
    full, assumed = complete_spec(
        spec, source=path.name, stored=stored_spec, stored_assumed=_safetensors_assumed(path)
    )
    module = build_from_factory(factory)
    state = _match_state_dict(module, state, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype or other mismatch not caught above
        raise ModelLoadError(
            f"weights in '{path.name}' do not fit {factory}: {first_line(exc)}"
        ) from exc
    return Classifier(
        module, full, device=resolve_device(device), name=path.stem, spec_assumptions=assumed
    )


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
    path: str | Path, *, allow: Sequence[str] = (), data: BinaryIO | None = None
) -> tuple[dict[str, torch.Tensor], InputSpec | None]:
    """Tensors of a weights file (already gated) and the spec stored with them, if any.

    ``data`` is a pickle-based file in memory (a decrypted one); ``path`` then names it.
    """
    path = Path(path)
    if data is None and path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    allowed = resolve_allowed(allow)  # a bad entry is the user's error, not the file's
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(
                data if data is not None else path, weights_only=True, map_location="cpu"
            )
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


def _safetensors_assumed(path: Path) -> tuple[str, ...]:
    """What the spec in a (readable) safetensors header assumed; only its header is read."""
    if path.suffix.lower() != ".safetensors":
        return ()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        metadata = fh.metadata() or {}
    return assumed_from_json(metadata.get(ASSUMED_METADATA_KEY) or "", path)


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
def assumed_from_json(text: str, path: Path) -> tuple[str, ...]:
    """The assumptions a model file records with its spec (`ASSUMED_EXTRA`); none if absent."""
    if not text:
        return ()
    try:
        notes = json.loads(text)
    except ValueError:
        notes = None
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ModelLoadError(f"the spec assumptions stored in '{path.name}' are not a JSON list")
    return tuple(notes)


def _spec_from_json(text: str, path: Path) -> InputSpec:
    """The spec mlwarden stored in a model file; a broken one is the file's error."""
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
    "ASSUMED_EXTRA",
    "ASSUMED_METADATA_KEY",
    "SPEC_METADATA_KEY",
    "build_from_factory",
    "from_module",
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
