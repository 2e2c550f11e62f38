"""The evasion attacks and the robustness presets, as data: one table each.

Every place that names an attack or a preset reads these tables: ``mlwarden attack
evasion --attack``, ``mlwarden evaluate robustness --preset``, the ``[checks.evasion]``
settings (their ``Literal`` of preset names), the help texts and the error messages. An
entry says what the attack needs from the model (`Capability`), so a mismatch is refused
before any work with a message naming both sides, and which norms it supports. A new
attack is one `AttackEntry`; a new preset is one `Preset`.

No torch import at module level: the CLI builds its help text from these tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mlwarden.core.contract import Capability, missing, require
from mlwarden.core.errors import ParameterError

if TYPE_CHECKING:
    from mlwarden.attacks.base import Attack

WHITE_BOX = frozenset({Capability.GRADIENTS})
SCORES = frozenset({Capability.SCORES})
LABELS = frozenset({Capability.LABELS})
BOTH_NORMS: tuple[str, ...] = ("linf", "l2")


class _HasNeeds(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def needs(self) -> frozenset[Capability]: ...


_Item = TypeVar("_Item", bound=_HasNeeds)


DEFAULT_STEPS = 20
"""Iterations of one attack when nobody chose (``attack evasion``, `build_attack`)."""
DEFAULT_QUERIES = 5000
"""Per-sample query budget of one black-box attack when nobody chose."""


@dataclass(frozen=True)
class Budget:
    """The budget arguments every attack is built from; each attack reads the ones it uses."""

    eps: float
    norm: str
    steps: int
    queries: int
    restarts: int
    seed: int


@dataclass(frozen=True)
class AttackEntry:
    """One attack: how to build it, what it needs from the model, one line of help."""

    name: str
    build: Callable[[Budget], Attack]
    needs: frozenset[Capability]
    help: str
    norms: tuple[str, ...] = BOTH_NORMS
    spends: str = "steps"
    """The budget that bounds its cost: ``steps`` (gradient evaluations) or ``queries``."""


def _fgsm(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.fgsm import FGSM

    return FGSM(b.eps, norm=b.norm)


def _pgd(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.pgd import PGD

    return PGD(b.eps, steps=b.steps, norm=b.norm, restarts=b.restarts, seed=b.seed)


def _apgd(loss: str) -> Callable[[Budget], Attack]:
    def build(b: Budget) -> Attack:
        from mlwarden.attacks.evasion.apgd import APGD

        return APGD(b.eps, norm=b.norm, steps=b.steps, restarts=b.restarts, loss=loss, seed=b.seed)

    return build


def _apgd_t(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.apgd import APGDTargeted

    return APGDTargeted(b.eps, norm=b.norm, steps=b.steps, restarts=b.restarts, seed=b.seed)


def _cw(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.cw import CarliniWagnerL2

    return CarliniWagnerL2(steps=b.steps, eps=b.eps)


def _deepfool(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.deepfool import DeepFool

    return DeepFool(norm=b.norm, steps=b.steps, eps=b.eps)


def _square(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.square import SquareAttack

    return SquareAttack(b.eps, norm=b.norm, queries=b.queries, seed=b.seed)


def _hopskipjump(b: Budget) -> Attack:
    from mlwarden.attacks.evasion.hopskipjump import HopSkipJump

    return HopSkipJump(norm=b.norm, queries=b.queries, max_iter=b.steps, seed=b.seed, eps=b.eps)


_ENTRIES = (
    AttackEntry("fgsm", _fgsm, WHITE_BOX, "one gradient step (a lower bound only)", spends=""),
    AttackEntry("pgd", _pgd, WHITE_BOX, "projected gradient descent, cross-entropy"),
    AttackEntry("apgd-ce", _apgd("ce"), WHITE_BOX, "auto-PGD, cross-entropy loss"),
    AttackEntry("apgd-dlr", _apgd("dlr"), WHITE_BOX, "auto-PGD, DLR loss"),
    AttackEntry("apgd-t", _apgd_t, WHITE_BOX, "auto-PGD towards each of the top-9 classes"),
    AttackEntry("cw", _cw, WHITE_BOX, "Carlini-Wagner, minimal L2 perturbation", ("l2",)),
    AttackEntry("deepfool", _deepfool, WHITE_BOX, "minimal step to the linearised boundary"),
    AttackEntry("square", _square, SCORES, "black-box, class-score queries", spends="queries"),
    AttackEntry(
        "hopskipjump",
        _hopskipjump,
        LABELS,
        "black-box, label queries only (steps = iterations)",
        spends="queries",
    ),
)
ATTACKS: dict[str, AttackEntry] = {e.name: e for e in _ENTRIES}
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACKS)


def canonical(name: str) -> str:
    """Attack and preset names are matched ignoring case and surrounding blanks."""
    return str(name).strip().lower()


def _lookup(table: dict[str, _Item], name: str, what: str) -> _Item:
    key = canonical(name)
    if key not in table:
        raise ParameterError(f"{what} must be one of {', '.join(table)}, got {name!r}")
    return table[key]


def _require(model: Any, table: dict[str, _Item], name: str, what: str) -> _Item:
    """The item of ``table`` called ``name`` if ``model`` offers what it needs; the error
    names both sides and lists the items that would work on ``model``."""
    item = _lookup(table, name, what)
    usable = [n for n, other in table.items() if not missing(model, other.needs)]
    hint = f"{what}s that work on it: {', '.join(usable)}" if usable else ""
    require(model, item.needs, by=f"{what} '{item.name}'", hint=hint)
    return item


def attack_entry(name: str) -> AttackEntry:
    """The entry called ``name`` (see `canonical`)."""
    return _lookup(ATTACKS, name, "attack")


def build_attack(
    name: str,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    restarts: int = 1,
    queries: int = DEFAULT_QUERIES,
) -> Attack:
    """The attack called ``name`` with the given budget (``steps`` or ``queries``)."""
    from mlwarden.attacks.evasion._projection import check_norm

    entry = attack_entry(name)
    norm = check_norm(norm)
    if norm not in entry.norms:
        raise ParameterError(
            f"attack '{entry.name}' supports norm {' or '.join(entry.norms)}, not {norm}"
        )
    return entry.build(Budget(eps, norm, steps, queries, restarts, seed))


def help_lines(entries: Iterable[AttackEntry | Preset]) -> str:
    """``name: help; name: help`` for option help texts."""
    return "; ".join(f"{e.name}: {e.help}" for e in entries)


# -- presets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresetAttack:
    """One attack of a preset with the budget the preset gives it unless the user sets one."""

    attack: str
    steps: int = 100
    queries: int = DEFAULT_QUERIES
    restarts: int = 1
    seed_offset: int = 0

    def describe(self) -> str:
        """``apgd-ce 100 steps x5 restarts``: the attack and the budget it spends."""
        spends = ATTACKS[self.attack].spends
        text = self.attack
        text += f" {self.steps} steps" if spends == "steps" else ""
        text += f" {self.queries} queries" if spends == "queries" else ""
        return text + (f" x{self.restarts} restarts" if self.restarts > 1 else "")


@dataclass(frozen=True)
class Preset:
    """An ensemble of registry attacks, cheapest first (see `evaluate_robustness`)."""

    name: str
    use: str
    attacks: tuple[PresetAttack, ...]

    @property
    def help(self) -> str:
        return f"{', '.join(a.describe() for a in self.attacks)} ({self.use})"

    @property
    def attack_names(self) -> list[str]:
        return [a.attack for a in self.attacks]

    @property
    def needs(self) -> frozenset[Capability]:
        """What the model must offer: the union of the needs of the preset's attacks."""
        return frozenset().union(*(ATTACKS[a.attack].needs for a in self.attacks))

    def build(
        self,
        eps: float,
        norm: str = "linf",
        *,
        steps: int | None = None,
        queries: int | None = None,
        seed: int = 0,
    ) -> list[Attack]:
        """The attacks at budget ``eps``; ``steps``/``queries`` replace the preset's own."""
        return [
            build_attack(
                a.attack,
                eps=eps,
                norm=norm,
                steps=steps or a.steps,
                queries=queries or a.queries,
                restarts=a.restarts,
                seed=seed + a.seed_offset,
            )
            for a in self.attacks
        ]


_PRESETS = (
    Preset("pgd", "quick regression check", (PresetAttack("pgd", steps=20),)),
    Preset("fast", "a solid single-attack estimate", (PresetAttack("apgd-ce"),)),
    Preset(
        "standard",
        "AutoAttack standard without FAB-T",
        (PresetAttack("apgd-ce"), PresetAttack("apgd-t"), PresetAttack("square")),
    ),
    Preset(
        "thorough",
        "claims you publish",
        (
            PresetAttack("apgd-ce", restarts=5),
            PresetAttack("apgd-dlr", seed_offset=1),
            PresetAttack("apgd-t"),
            PresetAttack("square", queries=10000),
        ),
    ),
    Preset("blackbox", "models that answer class scores", (PresetAttack("square"),)),
    Preset("labels", "models that answer labels only", (PresetAttack("hopskipjump", steps=50),)),
)
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
DEFAULT_PRESET = "standard"
"""The reliable evaluation; ``pgd`` is the quick regression check."""


def check_preset(name: str) -> Preset:
    """The preset called ``name`` (see `canonical`)."""
    return _lookup(PRESETS, name, "preset")


def preset_attacks(
    preset: str,
    eps: float,
    norm: str = "linf",
    *,
    steps: int | None = None,
    queries: int | None = None,
    seed: int = 0,
) -> list[Attack]:
    """The attacks of ``preset`` at budget ``eps``, cheapest first."""
    return check_preset(preset).build(eps, norm, steps=steps, queries=queries, seed=seed)


# -- requirements -------------------------------------------------------------------------------
def require_attack(model: Any, name: str) -> AttackEntry:
    """The entry of ``name`` if ``model`` offers what it needs; the error lists what works."""
    return _require(model, ATTACKS, name, "attack")


def require_preset(model: Any, name: str) -> Preset:
    """The preset ``name`` if ``model`` offers what it needs; the error lists what works."""
    return _require(model, PRESETS, name, "preset")
