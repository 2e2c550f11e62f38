"""Response models of the wire format (documentation in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TopK(BaseModel):
    label: int
    class_name: str
    probability: float


class Prediction(BaseModel):
    label: int
    class_name: str
    probabilities: list[float] | None = None
    top_k: list[TopK] | None = None


class Flag(BaseModel):
    check: str
    samples: list[int]
    detail: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: str
    flags: list[Flag]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    details: dict[str, Any] | None = None
