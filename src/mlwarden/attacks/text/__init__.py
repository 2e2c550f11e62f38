"""Evasion attacks on text classifiers: TextFooler, DeepWordBug, HotFlip, and their ensemble.

Each attack takes a `TextClassifier` (strings in) and refuses any other model before any
work; image attacks refuse a text model the same way (`mlwarden.core.contract`). Constraints
(`TextConstraints`) bound every adversarial sentence: the share of words changed and the
sentence similarity to the original under the packaged MiniLM sentence encoder. See
docs/text-attacks.md.
 Names load lazily
(no torch import until an attack is used).
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "DEFAULT_MAX_WORDS_SHARE": "mlwarden.attacks.text.constraints",
    "DEFAULT_MIN_SIMILARITY": "mlwarden.attacks.text.constraints",
    "DEFAULT_TEXT_QUERIES": "mlwarden.attacks.text.constraints",
    "TextAttack": "mlwarden.attacks.text.base",
    "TextAttackResult": "mlwarden.attacks.text.base",
    "TextConstraints": "mlwarden.attacks.text.constraints",
    "TextExample": "mlwarden.attacks.text.base",
    "DeepWordBug": "mlwarden.attacks.text.deepwordbug",
    "TextRobustnessResult": "mlwarden.attacks.text.ensemble",
    "evaluate_text_robustness": "mlwarden.attacks.text.ensemble",
    "HotFlip": "mlwarden.attacks.text.hotflip",
    "DEFAULT_TEXT_PRESET": "mlwarden.attacks.text.registry",
    "TEXT_ATTACKS": "mlwarden.attacks.text.registry",
    "TEXT_PRESET_NAMES": "mlwarden.attacks.text.registry",
    "TEXT_PRESETS": "mlwarden.attacks.text.registry",
    "require_text_preset": "mlwarden.attacks.text.registry",
    "EmbeddingNeighbours": "mlwarden.attacks.text.synonyms",
    "SynonymSource": "mlwarden.attacks.text.synonyms",
    "TextFooler": "mlwarden.attacks.text.textfooler",
}
__getattr__ = lazy_exports(__name__, _LAZY)
__all__ = sorted(_LAZY)
