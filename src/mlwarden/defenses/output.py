"""Output hardening: release less information per query to make model stealing dearer.

Extraction attacks (Tramèr et al., 2016; Orekondy et al., 2019 "Knockoff Nets") learn
fastest from full probability vectors. Each function here keeps the top-1 label (so honest
users get the same answer) and removes or distorts the rest:

- `labels_only`: the argmax only.
- `top_k`: the k largest probabilities, the rest withheld.
- `round_probabilities`: probabilities rounded to a few decimals (Tramèr et al., 2016).
- `reverse_sigmoid`: the deceptive perturbation of Lee et al., 2019 ("Defending against NN
  model stealing attacks using deceptive perturbations"), which keeps the argmax but makes
  the released scores a poor training signal for a surrogate.

All take and return tensors and never modify their input.
"""

from __future__ import annotations

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
    """Round to ``decimals`` places; ties that rounding would create keep the original argmax."""
    _check_probs(p)
    if not 0 <= decimals <= 6:
        raise ParameterError(f"decimals must be in [0, 6], got {decimals}")
    q = torch.round(p, decimals=decimals)
    return _restore_argmax(p, q)


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
    return _restore_argmax(p, q, strict=True)


def _restore_argmax(p: torch.Tensor, q: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """Swap the two entries in rows of ``q`` whose argmax differs from ``p``'s.

    ``strict``: also break ties in favour of ``p``'s label (a small margin, renormalised),
    so that the released vector's argmax is unambiguous.
    """
    want = p.argmax(dim=1)
    got = q.argmax(dim=1)
    bad = got != want
    if bool(bad.any()):
        q = q.clone()
        rows = torch.nonzero(bad).flatten()
        a, b = want[rows], got[rows]
        qa, qb = q[rows, a].clone(), q[rows, b].clone()
        q[rows, a], q[rows, b] = qb, qa
    if strict:
        top = q.gather(1, want[:, None])
        others = q.scatter(1, want[:, None], float("-inf")).max(dim=1, keepdim=True).values
        tied = (top <= others).squeeze(1)
        if bool(tied.any()):
            q = q.clone()
            q[tied, want[tied]] = others[tied, 0] + 1e-3
            q = q / q.sum(dim=1, keepdim=True)
    return q
