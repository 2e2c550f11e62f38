"""The text attacks and the text robustness presets, as data (as `attacks.evasion.registry`).

Every entry declares `Capability.TEXT_INPUTS`, so a text attack or preset handed a tensor
model is refused before any work with the contract's message, exactly as an image attack
handed a text model is. No torch import at module level: the CLI reads these tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlwarden.core.contract import Capability, missing, require
from mlwarden.core.errors import ParameterError

if TYPE_CHECKING:
    from mlwarden.attacks.text.base import TextAttack

_TEXT = frozenset({Capability.TEXT_INPUTS, Capability.SCORES})
_WHITE_BOX_TEXT = _TEXT | {Capability.EMBEDDING_GRADIENTS}


@dataclass(frozen=True)
class TextAttackEntry:
    """One text attack: how to build it (keyword arguments of `TextAttack`), its needs."""

    name: str
    build: Callable[..., TextAttack]
    needs: frozenset[Capability]
    help: str


def _textfooler(**kw: Any) -> TextAttack:
    from mlwarden.attacks.text.textfooler import TextFooler

    return TextFooler(**kw)


def _deepwordbug(**kw: Any) -> TextAttack:
    from mlwarden.attacks.text.deepwordbug import DeepWordBug

    return DeepWordBug(**kw)


def _hotflip(**kw: Any) -> TextAttack:
    from mlwarden.attacks.text.hotflip import HotFlip

    return HotFlip(**kw)


_ENTRIES = (
    TextAttackEntry("hotflip", _hotflip, _WHITE_BOX_TEXT, "word flips by the embedding gradient"),
    TextAttackEntry("textfooler", _textfooler, _TEXT, "synonym substitution, importance-ranked"),
    TextAttackEntry("deepwordbug", _deepwordbug, _TEXT, "character edits of important words"),
)
TEXT_ATTACKS: dict[str, TextAttackEntry] = {e.name: e for e in _ENTRIES}


@dataclass(frozen=True)
class TextPreset:
    """An ensemble of text attacks, cheapest first; each attacks what the earlier left."""

    name: str
    use: str
    attacks: tuple[str, ...]

    @property
    def help(self) -> str:
        return f"{', '.join(self.attacks)} ({self.use})"

    @property
    def needs(self) -> frozenset[Capability]:
        return frozenset().union(*(TEXT_ATTACKS[a].needs for a in self.attacks))

    def build(self, **kw: Any) -> list[TextAttack]:
        """The attacks, sharing ``kw`` (constraints, encoder, synonyms, seed)."""
        return [TEXT_ATTACKS[a].build(**kw) for a in self.attacks]


_PRESETS = (
    TextPreset("text", "white-box text models", ("hotflip", "textfooler", "deepwordbug")),
    TextPreset(
        "text-blackbox", "text models that answer class scores", ("textfooler", "deepwordbug")
    ),
)
TEXT_PRESETS: dict[str, TextPreset] = {p.name: p for p in _PRESETS}
TEXT_PRESET_NAMES: tuple[str, ...] = tuple(TEXT_PRESETS)
DEFAULT_TEXT_PRESET = "text"


def require_text_preset(model: Any, name: str) -> TextPreset:
    """The text preset ``name`` if ``model`` offers what it needs; the error lists what works."""
    key = str(name).strip().lower()
    if key not in TEXT_PRESETS:
        raise ParameterError(f"text preset must be one of {', '.join(TEXT_PRESETS)}, got {name!r}")
    preset = TEXT_PRESETS[key]
    usable = [n for n, p in TEXT_PRESETS.items() if not missing(model, p.needs)]
    hint = f"text presets that work on it: {', '.join(usable)}" if usable else ""
    require(model, preset.needs, by=f"preset '{preset.name}'", hint=hint)
    return preset


def require_text_attack(model: Any, name: str) -> TextAttackEntry:
    """The entry of text attack ``name`` if ``model`` offers what it needs."""
    key = str(name).strip().lower()
    if key not in TEXT_ATTACKS:
        raise ParameterError(f"text attack must be one of {', '.join(TEXT_ATTACKS)}, got {name!r}")
    entry = TEXT_ATTACKS[key]
    require(model, entry.needs, by=f"text attack '{entry.name}'")
    return entry
