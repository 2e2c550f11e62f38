"""Output hardening: release less information per query to make model stealing dearer.

Extraction attacks (Tramèr et al., 2016; Orekondy et al., 2019 "Knockoff Nets") learn
fastest from full probability vectors. Each function here keeps the top-1 label (so honest
users get the same answer) and removes or distorts the rest:

- `labels_only`: the argmax only.
- `top_k`: the k largest probabilities, the rest withheld.
- `round_probabilities`: probabilities rounded to a few decimals (Tramèr et al., 2016), with
  the label kept the unique top-1 where rounding would tie it.
- `reverse_sigmoid`: the deceptive perturbation of Lee et al., 2019 ("Defending against NN
  model stealing attacks using deceptive perturbations"), which keeps the argmax but makes
  the released scores a poor training signal for a surrogate.

All take and return tensors and never modify their input. `release` picks one of them by
the name of an output level, for a server that lets each client see a different detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mlwarden.core.errors import ParameterError


def _check_probs(p: torch.Tensor) -> None:
    if p.dim() != 2:
        raise ParameterError(f"probabilities must be (N, C), got shape {tuple(p.shape)}")


def labels_only(p: torch.Tensor) -> torch.Tensor:
    _check_probs(p)
    return p.argmax(dim=1)


def top_k(p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the ``k`` largest probabilities per row, largest first."""
    _check_probs(p)
    if k < 1:
        raise ParameterError(f"k must be at least 1, got {k}")
    values, indices = torch.topk(p, min(k, p.shape[1]), dim=1)
    return values, indices


def round_probabilities(p: torch.Tensor, decimals: int) -> torch.Tensor:
    """Round to ``decimals`` places, and keep the original argmax the unique top-1.

    Rounding is monotone, so it can change the top-1 only by tying the label with another
    entry (which ``argmax`` may then prefer). Such rows move one grid step, whichever the
    true values allow within one step: the label's entry up when rounding took it down,
    else the tied entries down (rounding took them up). Every value stays on the grid and
    within one step of ``p``.
    """
    _check_probs(p)
    if not 0 <= decimals <= 6:
        raise ParameterError(f"decimals must be in [0, 6], got {decimals}")
    q = torch.round(p, decimals=decimals)
    if p.shape[1] < 2:
        return q
    want = p.argmax(dim=1)
    values, idx = q.topk(2, dim=1)
    bad = (idx[:, 0] != want) | (values[:, 0] <= values[:, 1])
    if not bool(bad.any()):
        return q
    step = 10.0 ** -decimals
    rows = torch.nonzero(bad).flatten()
    label = want[rows]
    top = q[rows, label]
    up = p[rows, label] > top  # the label's entry was rounded down: raise it
    q[rows[up], label[up]] += step
    down = rows[~up]  # else lower the entries tied with it (they were rounded up)
    if len(down):
        cols = torch.arange(q.shape[1])
        tied = (q[down] == top[~up, None]) & (cols[None, :] != want[down, None])
        q[down] -= step * tied
    return torch.round(q, decimals=decimals)  # back onto the grid after the step


def reverse_sigmoid(p: torch.Tensor, beta: float = 0.7, gamma: float = 0.4) -> torch.Tensor:
    """Lee et al. (2019): ``q ∝ p - beta * (sigmoid(gamma * logit(p)) - 1/2)``, argmax kept.

    The perturbation pushes confident scores towards the middle and vice versa, which
    inverts the relation between the released score and the model's logit that a
    surrogate would learn from. Rows whose argmax would move are repaired by swapping the
    two entries, so the released label always equals the model's label.
    """
    _check_probs(p)
    if beta <= 0 or gamma <= 0:
        raise ParameterError(f"beta and gamma must be positive, got beta={beta}, gamma={gamma}")
    eps = 1e-6
    pc = p.clamp(eps, 1 - eps)
    logit = torch.log(pc) - torch.log1p(-pc)
    r = beta * (torch.sigmoid(gamma * logit) - 0.5)
    q = (pc - r).clamp_min(eps)
    q = q / q.sum(dim=1, keepdim=True)
    return _restore_argmax(p, q)


LEVELS = ("labels", "top_k", "rounded", "probabilities", "perturbed")
"""Output levels of `release`, from least to most detail (``perturbed`` is full but false)."""

TOP_K_DECIMALS = 6
"""Places of the probabilities `release` gives with its top-k labels (float32 noise beyond)."""


@dataclass(frozen=True)
class Released:
    """What one output level lets a client see of a batch (labels are always released).

    ``probabilities``: (N, C) for rounded, full or perturbed output; ``top_k``: the values
    (N, k) and indices (N, k) of the k largest probabilities. None where the level hides them.
    """

    probabilities: torch.Tensor | None = None
    top_k: tuple[torch.Tensor, torch.Tensor] | None = None


def release(
    p: torch.Tensor, level: str, *, k: int = 3, decimals: int = 2, beta: float = 0.7,
    gamma: float = 0.4,
) -> Released:
    """The part of the probabilities ``p`` (N, C) that output ``level`` (one of `LEVELS`) shows.

    ``k``: labels of ``top_k``; ``decimals``: of ``rounded``; ``beta``, ``gamma``: of
    ``perturbed`` (`reverse_sigmoid`). Every level keeps ``p``'s argmax as its top-1.
    """
    _check_probs(p)
    if level == "labels":
        return Released()
    if level == "probabilities":
        return Released(probabilities=p)
    # Rounded values come back in float64, where a value rounded to d places is the double
    # nearest that decimal and prints as written (float32 0.99 prints as 0.9900000095...).
    if level == "rounded":
        return Released(probabilities=round_probabilities(p.double(), decimals))
    if level == "perturbed":
        return Released(probabilities=reverse_sigmoid(p, beta, gamma))
    if level == "top_k":
        values, indices = top_k(p, k)
        return Released(top_k=(round_probabilities(values.double(), TOP_K_DECIMALS), indices))
    raise ParameterError(f"output level must be one of {', '.join(LEVELS)}; got '{level}'")


def _restore_argmax(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Swap the two entries in rows of ``q`` whose argmax differs from ``p``'s, then break
    ties in favour of ``p``'s label (a small margin, renormalised), so that the released
    vector's argmax is ``p``'s and unambiguous."""
    want = p.argmax(dim=1)
    got = q.argmax(dim=1)
    bad = got != want
    if bool(bad.any()):
        q = q.clone()
        rows = torch.nonzero(bad).flatten()
        a, b = want[rows], got[rows]
        qa, qb = q[rows, a].clone(), q[rows, b].clone()
        q[rows, a], q[rows, b] = qb, qa
    top = q.gather(1, want[:, None])
    others = q.scatter(1, want[:, None], float("-inf")).max(dim=1, keepdim=True).values
    tied = (top <= others).squeeze(1)
    if bool(tied.any()):
        q = q.clone()
        q[tied, want[tied]] = others[tied, 0] + 1e-3
        q = q / q.sum(dim=1, keepdim=True)
    return q
