"""Build an evasion attack from its command-line name.

One table maps names (``pgd``, ``apgd-ce``, ...) to builders, so the CLI, the audit
check and the robustness ensemble accept the same names and new attacks are one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlwarden.core.errors import ParameterError


def _fgsm(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.fgsm import FGSM

    return FGSM(eps, norm=norm)


def _pgd(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.pgd import PGD

    return PGD(eps, steps=steps, norm=norm, restarts=restarts, seed=seed)


def _apgd(loss: str) -> Callable[..., Any]:
    def build(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
        from mlwarden.attacks.evasion.apgd import APGD

        return APGD(eps, norm=norm, steps=steps, restarts=restarts, loss=loss, seed=seed)

    return build


def _apgd_t(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.apgd import APGDTargeted

    return APGDTargeted(eps, norm=norm, steps=steps, restarts=restarts, seed=seed)


def _cw(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.cw import CarliniWagnerL2

    if norm != "l2":
        raise ParameterError("attack 'cw' is an L2 attack; use --norm l2")
    return CarliniWagnerL2(steps=steps, eps=eps)


def _deepfool(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.deepfool import DeepFool

    return DeepFool(norm=norm, steps=steps, eps=eps)


def _square(eps: float, norm: str, steps: int, seed: int, restarts: int, queries: int) -> Any:
    from mlwarden.attacks.evasion.square import SquareAttack

    return SquareAttack(eps, norm=norm, queries=queries, seed=seed)


_BUILDERS: dict[str, Callable[..., Any]] = {
    "fgsm": _fgsm,
    "pgd": _pgd,
    "apgd-ce": _apgd("ce"),
    "apgd-dlr": _apgd("dlr"),
    "apgd-t": _apgd_t,
    "cw": _cw,
    "deepfool": _deepfool,
    "square": _square,
}

ATTACK_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_attack(
    name: str,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 20,
    seed: int = 0,
    restarts: int = 1,
    queries: int = 5000,
) -> Any:
    """The attack called ``name`` with the given budget (``steps`` or ``queries``)."""
    key = str(name).strip().lower()
    if key not in _BUILDERS:
        raise ParameterError(f"attack must be one of {', '.join(ATTACK_NAMES)}, got {name!r}")
    from mlwarden.attacks.evasion._projection import check_norm

    return _BUILDERS[key](eps, check_norm(norm), steps, seed, restarts, queries)
