"""Model extraction: stealing a model through its query interface."""

from mlwarden.attacks.extraction.knockoff import (
    ExtractionPoint,
    ExtractionResult,
    KnockoffExtraction,
    default_architecture,
)

__all__ = ["ExtractionPoint", "ExtractionResult", "KnockoffExtraction", "default_architecture"]
