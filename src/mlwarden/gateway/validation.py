"""Request validation against the model's `InputSpec`: size, JSON, shape, finiteness, bounds.

Two steps of a request live here. *Parse*: `read_body` (size limit, declared or streamed)
and `parse_body` (JSON). *Validate*: `parse_inputs` (shape, finiteness, bounds) before the
model, and `ood_flag` on the OOD validator's verdict after it. Parsing is our own
(``orjson`` or ``json``, then NumPy) rather than a pydantic body model: a batch of images
is thousands of numbers, and one vectorised conversion is both faster and able to say
exactly which sample is wrong. Every failure is a `GatewayError` with status 400/413/422.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.core.spec import InputSpec
from mlwarden.core.text import TextSpec
from mlwarden.gateway.config import TextConfig
from mlwarden.gateway.errors import GatewayError, bad_request, invalid_input, too_large

try:  # three times faster than json on bodies of numbers; part of the serve extra
    import orjson as _orjson
except ImportError:  # pragma: no cover - a serve install without it still works
    _orjson = None  # type: ignore[assignment]


@dataclass
class ParsedBatch:
    """The inputs as one float32 array; ``out_of_bounds``: samples clipped into the bounds."""

    x: np.ndarray
    out_of_bounds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Flag:
    """A check that found something and let the request through.

    ``action`` ``flag`` shows it to the client in the response; ``log`` only writes it to
    the audit trail and the metrics.
    """

    check: str
    samples: list[int]
    detail: str
    action: str

    @property
    def visible(self) -> bool:
        return self.action == "flag"

    def public(self) -> dict[str, Any]:
        """The response's form: check, samples, detail."""
        return {"check": self.check, "samples": self.samples, "detail": self.detail}


async def read_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading, or while streaming when there is none."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise bad_request("Content-Length is not a number") from None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _where(bad: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(bad).tolist()
    shown = ", ".join(map(str, idx[:limit])) + (", ..." if len(idx) > limit else "")
    return f"sample(s) {shown}"


def parse_body(body: bytes) -> Any:
    if not body:
        raise bad_request("request body is empty; send {\"inputs\": [...]}")
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except ValueError:
            pass  # NaN, Infinity, 1e400 or broken JSON: the standard parser says which below
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise bad_request(f"malformed JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise bad_request("malformed JSON: nested too deeply") from None


def dump_json(payload: Any) -> bytes:
    """Compact JSON for a response body (orjson when installed, like `parse_body`)."""
    if _orjson is not None:
        return _orjson.dumps(payload)
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_inputs(payload: Any, spec: InputSpec, max_batch: int,
                 bounds_action: str = "reject") -> ParsedBatch:
    """Turn ``{"inputs": [...]}`` into a float32 array of shape (N, *spec.shape)."""
    if not isinstance(payload, dict):
        raise invalid_input("body must be a JSON object with an 'inputs' list")
    extra = sorted(set(payload) - {"inputs"})
    if extra:
        raise invalid_input(f"unknown field(s) {extra}; the body has only 'inputs'")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        raise invalid_input("'inputs' must be a list of samples")
    if not inputs:
        raise invalid_input("'inputs' is empty; send at least one sample")
    if len(inputs) > max_batch:
        raise invalid_input(f"'inputs' has {len(inputs)} samples; the limit is {max_batch} "
                            "per request: send smaller batches")
    expected = "(" + ", ".join(map(str, spec.shape)) + ")"
    try:
        raw = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError):
        raw = None
    if raw is None or raw.dtype.kind not in "fiu":
        for i, sample in enumerate(inputs):
            if isinstance(sample, str):
                raise invalid_input(f"inputs[{i}] is text; this model takes tensors: a nested "
                                    f"list of numbers of shape {expected} per sample")
            try:
                arr = np.asarray(sample)
            except (ValueError, TypeError, OverflowError):
                arr = None
            if arr is None or arr.dtype.kind not in "fiu":
                raise invalid_input(
                    f"inputs[{i}] is not a nested list of numbers of shape {expected}"
                )
            if arr.shape != spec.shape:
                raise invalid_input(
                    f"inputs[{i}] has shape {arr.shape}; the model expects {expected}"
                )
        raise invalid_input(f"'inputs' must be a list of numbers of shape {expected}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = raw.astype(np.float32)
    if x.ndim != len(spec.shape) + 1 or x.shape[1:] != spec.shape:
        got = x.shape[1:] if x.ndim > 1 else ()
        raise invalid_input(f"each input has shape {tuple(got)}; the model expects {expected}")
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise invalid_input(f"{_where(~finite)} contain NaN or infinite values")
    low, high = spec.bounds
    tol = 1e-6 * max(1.0, high - low)
    outside = (flat.min(axis=1) < low - tol) | (flat.max(axis=1) > high + tol)
    out_of_bounds: list[int] = []
    if outside.any():
        if bounds_action == "reject":
            raise invalid_input(f"{_where(outside)} have values outside the input bounds "
                                f"[{low:g}, {high:g}]")
        out_of_bounds = np.flatnonzero(outside).tolist()
        np.clip(x, low, high, out=x)
    return ParsedBatch(x, out_of_bounds)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "a number", float: "a number", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def parse_texts(payload: Any, max_batch: int, max_chars: int) -> list[str]:
    """``{"inputs": ["a review", ...]}`` as a list of strings, each non-blank and at most
    ``max_chars`` characters; tokens are counted later, in the batch step (`text`)."""
    if not isinstance(payload, dict):
        hint = " (wrap a single text: {\"inputs\": [\"...\"]})" if isinstance(payload, str) else ""
        raise invalid_input(f"body must be a JSON object with an 'inputs' list of strings, "
                            f"got {_json_type(payload)}{hint}")
    extra = sorted(set(payload) - {"inputs"})
    if extra:
        raise invalid_input(f"unknown field(s) {extra}; the body has only 'inputs'")
    inputs = payload.get("inputs")
    if isinstance(inputs, str):
        raise invalid_input("'inputs' must be a list of strings, got a string: send "
                            "{\"inputs\": [\"...\"]}")
    if not isinstance(inputs, list):
        raise invalid_input(f"'inputs' must be a list of strings, got {_json_type(inputs)}")
    if not inputs:
        raise invalid_input("'inputs' is empty; send at least one text")
    if len(inputs) > max_batch:
        raise invalid_input(f"'inputs' has {len(inputs)} texts; the limit is {max_batch} "
                            "per request: send smaller batches")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            tensor = " (this model takes text, not tensors)" if isinstance(text, list) else ""
            raise invalid_input(f"inputs[{i}] is {_json_type(text)}, not a string{tensor}")
        if not text.strip():
            raise invalid_input(f"inputs[{i}] is empty or only whitespace; send some text")
        if len(text) > max_chars:
            raise invalid_input(f"inputs[{i}] has {len(text)} characters; the limit is "
                                f"{max_chars} per text")
        try:  # JSON escapes can spell lone surrogates, which no tokenizer can read
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_input(f"inputs[{i}] holds an unpaired surrogate escape (\\ud800 to "
                                "\\udfff): not valid Unicode text") from None
    return inputs


def bounds_flag(batch: ParsedBatch, action: str) -> Flag | None:
    """The flag for samples `parse_inputs` clipped (``bounds`` set to ``flag`` or ``log``)."""
    if not batch.out_of_bounds:
        return None
    return Flag("bounds", batch.out_of_bounds, "values clipped into the input bounds", action)


def ood_flag(ood: list[bool] | None, threshold: float, action: str) -> Flag | None:
    """The OOD check on the validator's verdict per sample: 422 with ``reject``, else a flag."""
    if ood is None or not any(ood):
        return None
    idx = [i for i, flagged in enumerate(ood) if flagged]
    detail = f"out-of-distribution score above the calibrated threshold {threshold:.4g}"
    if action == "reject":
        raise GatewayError(422, "out_of_distribution",
                           f"sample(s) {idx[:5]} are out of distribution: {detail}")
    return Flag("ood", idx, detail, action)


def request_schema(spec: InputSpec | TextSpec, max_batch: int,
                   text: TextConfig | None = None) -> dict[str, Any]:
    """JSON schema of the predict body, derived from the spec (for the OpenAPI document);
    a text model's states the limits of ``text`` (characters and tokens per text)."""
    if isinstance(spec, TextSpec):
        return text_request_schema(spec, max_batch, text or TextConfig())
    low, high = spec.bounds
    item: dict[str, Any] = {"type": "number", "minimum": low, "maximum": high}
    for dim in reversed(spec.shape):
        item = {"type": "array", "items": item, "minItems": dim, "maxItems": dim}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "array", "items": item, "minItems": 1, "maxItems": max_batch}
        },
    }


def text_request_schema(spec: TextSpec, max_batch: int, text: TextConfig) -> dict[str, Any]:
    """JSON schema of a text model's predict body: a list of non-blank strings."""
    tokens, max_chars = text.token_limit(spec.max_tokens), text.max_chars
    policy = "refused (422)" if text.over_long == "refuse" else "truncated to that many"
    item = {
        "type": "string", "minLength": 1, "maxLength": max_chars, "pattern": r"\S",
        "description": f"one text; at most {max_chars} characters and {tokens} tokens of the "
                       f"model's tokenizer ({spec.tokenizer}, special tokens included); a "
                       f"longer text is {policy}",
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "inputs": {"type": "array", "items": item, "minItems": 1, "maxItems": max_batch}
        },
        "example": {"inputs": ["a gripping, beautifully shot film", "a tedious mess"]},
    }
