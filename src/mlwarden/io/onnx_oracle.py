"""`OnnxOracle`: an ``.onnx`` model behind the `Oracle` interface (black-box).

ONNX is treated as a black box on purpose: converters back to torch cannot read
what current torch exports (see DESIGN.md), and a deployed model is usually a
black box anyway. The oracle runs an onnxruntime CPU session and returns
probabilities: the softmax of the graph's output, unless the file's metadata says
(``mlwarden.output = probabilities``) that the graph already outputs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlwarden.core.errors import (
    DataError,
    ModelLoadError,
    OracleError,
    ParameterError,
    first_line,
    require,
)
from mlwarden.core.oracle import Oracle, OracleOutput
from mlwarden.core.spec import InputSpec, SpecInput, complete_spec
from mlwarden.io.models import ASSUMED_METADATA_KEY, SPEC_METADATA_KEY, assumed_from_json

OUTPUT_KEY = "mlwarden.output"
NORMALIZATION_KEY = "mlwarden.normalization"
_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


class OnnxOracle(Oracle):
    """Query an ONNX classifier; inputs are raw (inside ``spec.bounds``) batches.

    The spec comes from the file's ``mlwarden.spec`` metadata (written by
    `mlwarden.io.export_onnx`), with the fields of ``spec`` (a whole `InputSpec` or a
    `SpecOverride`) winning; a file without it gives its input shape and output size
    from the graph, and bounds are assumed (``spec_assumptions``). A spec with ``mean``/``std``
    is applied before the graph unless the metadata says the graph does it itself.
    Deterministic: the same input gives the same scores (see `Oracle.deterministic`).
    """

    deterministic = True

    def __init__(
        self,
        path: str | Path,
        spec: SpecInput | None = None,
        *,
        output: OracleOutput = "probabilities",
        budget: int | None = None,
        batch_size: int = 512,
        threads: int | None = None,
    ) -> None:
        ort: Any = require("onnxruntime", "onnx")
        if batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, Fail, NoSuchFile, ...
            raise ModelLoadError(
                f"cannot read '{self.path}' as an ONNX model (corrupt, truncated or unsupported): "
                f"{first_line(exc)}"
            ) from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map or {})
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"'{self.path.name}' takes {len(inputs)} inputs; mlwarden needs exactly one batch"
            )
        self._input = inputs[0]
        graph_output = self.session.get_outputs()[0]
        self._output_name = graph_output.name
        if self._input.type not in _NP_TYPES:
            raise ModelLoadError(
                f"'{self.path.name}' takes {self._input.type} inputs; only float inputs are "
                "supported"
            )
        self._dtype = _NP_TYPES[self._input.type]
        dims = _static(self._input.shape)
        out_dims = _static(graph_output.shape)
        spec, assumed = complete_spec(
            spec,
            source=self.path.name,
            stored=self._stored_spec(meta.get(SPEC_METADATA_KEY)),
            shape=dims[1:] if dims else None,
            num_classes=out_dims[-1] if len(out_dims) >= 2 else None,
            stored_assumed=assumed_from_json(meta.get(ASSUMED_METADATA_KEY) or "", self.path),
        )
        super().__init__(spec, output, budget)
        self.name = self.path.name
        self.spec_assumptions = assumed
        self.batch_size = batch_size
        self.outputs_probabilities = meta.get(OUTPUT_KEY, "logits") == "probabilities"
        self.normalize_inputs = spec.mean is not None and meta.get(NORMALIZATION_KEY) != "in-graph"
        self.fixed_batch: int | None = dims[0] if dims else None

    def _stored_spec(self, stored: str | None) -> InputSpec | None:
        """The spec `mlwarden.io.export_onnx` wrote into the file's metadata, if any."""
        if not stored:
            return None
        try:
            return InputSpec.model_validate(json.loads(stored))
        except Exception as exc:  # noqa: BLE001 - bad JSON or invalid spec
            raise ModelLoadError(
                f"the input spec stored in '{self.path.name}' is invalid: {first_line(exc)}"
            ) from exc

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.spec.shape:
            raise DataError(
                f"input has shape {tuple(x.shape)}; the model expects (N, "
                + ", ".join(map(str, self.spec.shape))
                + ")"
            )
        n = len(x)
        if n == 0:
            empty = torch.empty(0, self.num_classes)
            return empty.argmax(1) if self.output == "labels" else empty
        batch = x.detach().to("cpu", torch.float32)
        if self.normalize_inputs:
            batch = self._normalize(batch)
        arr = batch.numpy().astype(self._dtype, copy=False)
        step = self.fixed_batch or self.batch_size
        chunks = []
        for start in range(0, n, step):
            chunk = arr[start : start + step]
            k = len(chunk)
            if self.fixed_batch and k < self.fixed_batch:
                pad = np.repeat(chunk[-1:], self.fixed_batch - k, axis=0)
                chunk = np.concatenate([chunk, pad])
            try:
                (out,) = self.session.run([self._output_name], {self._input.name: chunk})
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                raise OracleError(
                    f"onnxruntime failed on '{self.path.name}': {first_line(exc)}"
                ) from exc
            chunks.append(np.asarray(out, dtype=np.float32)[:k])
        scores = torch.from_numpy(np.concatenate(chunks))
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise OracleError(
                f"'{self.path.name}' returned shape {tuple(scores.shape)}; expected "
                f"({n}, {self.num_classes}) scores"
            )
        probs = scores if self.outputs_probabilities else torch.softmax(scores, dim=1)
        return probs.argmax(1) if self.output == "labels" else probs

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        assert self.spec.mean is not None and self.spec.std is not None
        view = (1, -1) + (1,) * (len(self.spec.shape) - 1)
        mean = torch.tensor(self.spec.mean).view(view)
        std = torch.tensor(self.spec.std).view(view)
        return (x - mean) / std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw graph outputs (not counted against the budget); for parity checks."""
        saved, self.outputs_probabilities = self.outputs_probabilities, True
        saved_output, self.output = self.output, "probabilities"
        try:
            return self._query(x)
        finally:
            self.outputs_probabilities, self.output = saved, saved_output


def _static(dims: Any) -> tuple[int | None, ...]:
    """ONNX dimensions with symbolic (named) or unknown ones as ``None``."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in (dims or ()))
