"""The likelihood-ratio membership attack, LiRA (Carlini et al., S&P 2022).

Shadow models are trained on random halves of a data pool that contains the target
records. For each record, the scaled-logit confidence of shadows that saw it (IN)
and did not see it (OUT) give two Gaussians; the target model's confidence is
scored by the likelihood ratio (online) or by how far it lies above the OUT
distribution (offline, which needs no shadow trained on the record and so scales
to new records without retraining). With few shadows the per-record variances are
noisy, so, as the paper recommends, a global variance is used below 64 shadows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from mlwarden.attacks.inference.threshold import membership_logit
from mlwarden.core.classifier import Classifier
from mlwarden.core.errors import DataError, ParameterError
from mlwarden.core.oracle import ClassifierOracle, Oracle
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator

Variant = Literal["online", "offline"]
ShadowTrainer = Callable[[torch.Tensor, torch.Tensor, int], Classifier]


def fresh_copy(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with re-initialised weights: a shadow of the same architecture.

    Layers with ``reset_parameters`` use their own initialiser; any other parameter
    (e.g. inside an exported graph) gets Kaiming-uniform weights and zero biases.
    """
    torch.manual_seed(seed)
    clone = copy.deepcopy(module)
    done: set[int] = set()
    for sub in clone.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset) and sub is not clone:
            reset()
            done.update(id(p) for p in sub.parameters(recurse=False))
    with torch.no_grad():
        for p in clone.parameters():
            if id(p) in done:
                continue
            if p.dim() >= 2:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            else:
                p.zero_()
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


@dataclass
class ShadowTraining:
    """How to train a shadow model: mimic the target's architecture and training."""

    template: nn.Module
    spec: object
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    dp_epsilon: float | None = None  # the target was trained with DP-SGD to this epsilon
    dp_max_grad_norm: float = 1.0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> Classifier:
        module = fresh_copy(self.template, seed)
        if self.dp_epsilon is not None:
            # A DP target's shadows must be DP too, or LiRA's calibration (and so the
            # leakage it reports) is off.
            from mlwarden.defenses.training.dp import fit_private

            fit_private(
                module,
                x,
                y,
                target_epsilon=self.dp_epsilon,
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                max_grad_norm=self.dp_max_grad_norm,
                seed=seed,
            )
        else:
            from mlwarden.core.training import fit

            fit(
                module,
                x,
                y,
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                weight_decay=self.weight_decay,
                seed=seed,
            )
        return Classifier(module, self.spec)  # type: ignore[arg-type]

    def recipe(self) -> dict[str, object]:
        """How the shadows are trained, for the report."""
        out: dict[str, object] = {
            "training": "DP-SGD" if self.dp_epsilon is not None else "SGD",
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
        }
        if self.dp_epsilon is not None:
            out.update(dp_epsilon=self.dp_epsilon, dp_max_grad_norm=self.dp_max_grad_norm)
        return out


@dataclass
class LiRAResult:
    scores: torch.Tensor
    shadow_in: torch.Tensor = field(repr=False)  # (shadows, records) bool: record used by shadow
    shadow_conf: torch.Tensor = field(repr=False)  # (shadows, records) scaled logits
    target_conf: torch.Tensor = field(repr=False)


class LiRA:
    """Likelihood-ratio attack with a shadow budget the user sets."""

    def __init__(
        self,
        shadow_models: int = 16,
        variant: Variant = "online",
        seed: int = 0,
        global_variance: bool | None = None,
    ) -> None:
        if shadow_models < 2:
            raise ParameterError(f"shadow_models must be at least 2, got {shadow_models}")
        if variant not in ("online", "offline"):
            raise ParameterError(f"variant must be 'online' or 'offline', got {variant!r}")
        self.shadow_models = shadow_models
        self.variant = variant
        self.seed = seed
        self.global_variance = global_variance

    def fit_shadows(
        self,
        train: ShadowTrainer,
        x: torch.Tensor,
        y: torch.Tensor,
        progress: ProgressCallback = null_progress,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Train the shadows on random halves of ``(x, y)``; return IN masks and confidences.

        Each record is IN for exactly half of the shadows (a balanced design, as in the
        paper's code), so online LiRA always has both distributions.
        """
        n = len(x)
        if n < 4:
            raise DataError("LiRA needs a pool of at least 4 records")
        gen = make_generator(self.seed)
        k = self.shadow_models
        # Balanced assignment: per record, a random half of the shadows include it.
        order = torch.rand(n, k, generator=gen).argsort(dim=1)
        shadow_in = (order < (k // 2)).T.contiguous()  # (k, n)
        confs = torch.empty(k, n, dtype=torch.float64)
        for s in range(k):
            idx = torch.nonzero(shadow_in[s]).flatten()
            model = train(x[idx], y[idx], self.seed * 1000 + s + 1)
            confs[s] = membership_logit(ClassifierOracle(model), x, y)
            progress("shadow models", s + 1, k)
        return shadow_in, confs

    def score(
        self,
        target: Oracle,
        x: torch.Tensor | list[str],
        y: torch.Tensor,
        shadow_in: torch.Tensor,
        shadow_conf: torch.Tensor,
        observed: torch.Tensor | None = None,
    ) -> LiRAResult:
        """Membership score of each record for ``target`` (higher = member).

        ``observed`` is the target's `membership_logit` on ``(x, y)`` when the caller has it
        already (the threshold attack's scores): no query is asked twice.
        """
        obs = membership_logit(target, x, y) if observed is None else observed.double()
        out_mask = ~shadow_in
        mu_out = _masked_mean(shadow_conf, out_mask)
        mu_in = _masked_mean(shadow_conf, shadow_in)
        use_global = (
            self.global_variance if self.global_variance is not None else self.shadow_models < 64
        )
        if use_global:
            sd_out = torch.full_like(mu_out, float(shadow_conf[out_mask].std()))
            sd_in = torch.full_like(mu_in, float(shadow_conf[shadow_in].std()))
        else:
            sd_out = _masked_std(shadow_conf, out_mask, mu_out)
            sd_in = _masked_std(shadow_conf, shadow_in, mu_in)
        sd_out = sd_out.clamp_min(1e-6)
        sd_in = sd_in.clamp_min(1e-6)
        if self.variant == "online":
            scores = _log_normal(obs, mu_in, sd_in) - _log_normal(obs, mu_out, sd_out)
        else:
            # One-sided test against OUT: log-probability that OUT is at least this confident.
            z = (obs - mu_out) / sd_out
            scores = -torch.special.log_ndtr(-z)
        return LiRAResult(scores, shadow_in, shadow_conf, obs)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum(0).clamp_min(1)
    return (values * mask).sum(0) / count


def _masked_std(values: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    count = (mask.sum(0) - 1).clamp_min(1)
    return (((values - mean) ** 2) * mask).sum(0).div(count).sqrt()


def _log_normal(x: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sd) ** 2 - torch.log(sd)
