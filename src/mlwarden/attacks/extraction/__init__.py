"""Model extraction: stealing a model through its query interface."""

from mlwarden.attacks.extraction.knockoff import (
    ExtractionPoint,
    ExtractionResult,
    KnockoffExtraction,
    default_architecture,
)
from mlwarden.attacks.extraction.text import TextCopy, TextKnockoff

__all__ = [
    "ExtractionPoint",
    "ExtractionResult",
    "KnockoffExtraction",
    "TextCopy",
    "TextKnockoff",
    "default_architecture",
]
