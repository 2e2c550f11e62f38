"""Adversarial training: a robust copy of a classifier, on the shared training loop.

Four methods, each a batch transform (and, for TRADES, an extra loss) handed to
`mlwarden.core.training.fit`:

- ``pgd``: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models
  Resistant to Adversarial Attacks", ICLR 2018: train on the PGD example of each batch
  (random start, ``steps`` steps of ``alpha``), the inner maximum of the robust loss.
- ``trades``: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled
  Trade-off between Robustness and Accuracy", ICML 2019: cross-entropy on the clean
  batch plus ``beta * KL(f(x) || f(x'))``, ``x'`` maximising that KL in the ball.
- ``fast``: Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial
  training", ICLR 2020: one FGSM step of ``1.25 * eps`` from a uniformly random start.
  It can fail suddenly ("catastrophic overfitting": robustness to PGD collapses while
  FGSM accuracy climbs), so every epoch measures PGD and FGSM accuracy on a held-apart
  batch and, on collapse, restores the best epoch and falls back to PGD (or stops).
- ``gaussian``: Gaussian noise augmentation, ``x + N(0, sigma^2)``, which makes the
  randomized-smoothing classifier of Cohen, Rosenfeld & Kolter (ICML 2019) accurate.
  The noise is *not* clipped to the input bounds: smoothing certifies the base model
  under exactly this unclipped distribution, so training must see the same one.

The radius ramps linearly from ``eps / warmup_epochs`` to ``eps`` over the first
``warmup_epochs`` epochs (a model that cannot yet classify clean inputs learns nothing
from worst-case ones). Examples are crafted in eval mode, inside `InputSpec.bounds`, in
the raw input space the `Classifier` normalises itself.

Why an inner loop here rather than the `PGD` attack object: an attack stops on a sample
as soon as it is fooled and never attacks a sample misclassified when clean (the right
economy for measuring robustness), while Madry's training needs the loss maximiser over
all steps and all samples. Both use the same geometry (`_projection`) and gradients
(`_gradients.objective_and_grad`); the monitor measures with the `PGD` and `FGSM`
attacks themselves.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mlwarden.attacks.evasion._gradients import ce_objective, evaluating, objective_and_grad
from mlwarden.attacks.evasion._projection import (
    project_adversarial,
    random_init,
    steepest_direction,
)
from mlwarden.core.errors import DataError
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.seeding import make_generator
from mlwarden.defenses.training.hardening_settings import (
    METHODS,
    AdversarialTrainingSettings,
    checked_settings,
)


@dataclass
class EpochRecord:
    """One epoch of training as the monitor saw it (accuracies on the held-apart batch)."""

    epoch: int
    method: str
    eps: float
    loss: float
    pgd_accuracy: float | None
    fgsm_accuracy: float | None


@dataclass
class AdversarialTrainingResult:
    """The hardened copy, what it was trained with and what happened on the way.

    ``overfit_epoch`` is the 1-based epoch at which catastrophic overfitting was detected
    (None when it was not); ``events`` says in words what the trainer did about it.
    """

    classifier: Any
    method: str
    epochs: list[EpochRecord] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    overfit_epoch: int | None = None
    best_epoch: int | None = None
    train_samples: int = 0
    monitor_samples: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> list[float]:
        return [e.loss for e in self.epochs]


# -- inner maximisation ------------------------------------------------------------------------
def kl_objective(logits: torch.Tensor, clean_probs: torch.Tensor, _targeted: bool) -> torch.Tensor:
    """Per-sample ``KL(p_clean || softmax(logits))``, the TRADES inner objective."""
    return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="none").sum(dim=1)


def pgd_examples(
    model: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    generator: torch.Generator,
    objective: Any = ce_objective,
    start_scale: float = 1.0,
) -> torch.Tensor:
    """Maximise ``objective`` over the ``eps``-ball around ``x`` (inside the spec's bounds)
    for ``steps`` steps from a random start; every sample, every step (see module doc)."""
    bounds = model.spec.bounds
    with evaluating(model):
        cur = random_init(x, eps * start_scale, norm, bounds, generator)
        for _ in range(steps):
            _, _, grad = objective_and_grad(model, cur, target, objective, False)
            cur = project_adversarial(
                cur + alpha * steepest_direction(grad, norm), x, eps, norm, bounds
            )
    return cur.detach()


class _Perturber:
    """The batch transform (and TRADES' extra loss) of one training run; ``eps`` and
    ``method`` change between epochs (schedule, fallback after overfitting)."""

    def __init__(self, settings: AdversarialTrainingSettings, generator: torch.Generator) -> None:
        self.settings = settings
        self.method = settings.method
        self.eps = settings.eps_at(0)
        self.generator = generator
        self._adv: torch.Tensor | None = None
        # the full-radius step of each method (fast may fall back to pgd mid-run)
        self._steps = {m: settings.model_copy(update={"method": m}).step_size() for m in METHODS}

    def transform(self, model: Any, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if self.method == "gaussian":
            noise = torch.randn(xb.shape, generator=self.generator).to(xb.device, xb.dtype)
            return xb + s.sigma * noise
        if self.method == "trades":
            with torch.no_grad(), evaluating(model):
                clean = torch.softmax(model(xb), dim=1)
            self._adv = pgd_examples(
                model,
                xb,
                clean,
                eps=self.eps,
                alpha=self._alpha(),
                steps=s.steps,
                norm=s.norm,
                generator=self.generator,
                objective=kl_objective,
                start_scale=1e-3,  # TRADES starts at x + 0.001 * noise
            )
            return xb
        steps = 1 if self.method == "fast" else s.steps
        return pgd_examples(
            model,
            xb,
            yb,
            eps=self.eps,
            alpha=self._alpha(),
            steps=steps,
            norm=s.norm,
            generator=self.generator,
        )

    def _alpha(self) -> float:
        """The step, scaled with the ramped radius so that warm-up steps stay in proportion."""
        return self._steps[self.method] * self.eps / self.settings.eps

    def extra_loss(
        self, model: Any, xb: torch.Tensor, _yb: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        if self.method != "trades" or self._adv is None:
            return logits.new_zeros(())
        adv_logits = model(self._adv)
        kl = F.kl_div(
            F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        return self.settings.beta * kl


Monitor = Callable[[Any, torch.Tensor, torch.Tensor], tuple[float, float]]
"""``(model, x, y) -> (PGD accuracy, FGSM accuracy)`` on the held-apart batch."""


def pgd_fgsm_accuracy(
    model: Any, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, seed: int
) -> tuple[float, float]:
    """Accuracy under PGD-10 (random start) and under FGSM at ``eps``: the pair whose
    divergence is the signature of catastrophic overfitting (Wong et al. 2020)."""
    from mlwarden.attacks.evasion import FGSM, PGD

    pgd = PGD(eps, steps=10, norm=norm, seed=seed)(model, x, y)
    fgsm = FGSM(eps, norm=norm)(model, x, y)
    return pgd.robust_accuracy, fgsm.robust_accuracy


# -- the trainer -------------------------------------------------------------------------------
def check_training_data(model: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """One clear error for data that cannot train: shape, bounds, labels, NaN, one class."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError("training data must be tensors (x, y)")
    if len(x) != len(y):
        raise DataError(f"training data has {len(x)} samples but {len(y)} labels")
    if len(x) < 2:
        raise DataError(f"need at least 2 training samples, got {len(x)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x.flatten(1))).any(dim=1).sum())
        raise DataError(f"training data holds NaN or infinite values in {bad} sample(s)")
    model.spec.validate_batch(x, what="training data")
    model.spec.validate_labels(y, what="training labels")
    if len(torch.unique(y)) < 2:
        raise DataError("training data holds a single class; need at least 2")


def adversarial_train(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: AdversarialTrainingSettings | None = None,
    *,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
    monitor: Monitor | None = None,
    **overrides: Any,
) -> AdversarialTrainingResult:
    """Train a hardened copy of ``model`` (a `Classifier`, or a loaded ``.pt2``) on ``(x, y)``.

    ``settings`` (or keyword ``overrides`` of its fields, validated) choose the method; the
    model itself is never modified. ``monitor_samples`` of the data are held apart for the
    per-epoch PGD/FGSM monitor and not trained on; ``monitor(student, x, y)`` replaces the
    measurement (default `pgd_fgsm_accuracy`), e.g. to watch another attack.
    """
    from mlwarden.core.training import fit, trainable_copy

    fields = set(AdversarialTrainingSettings.model_fields)  # HardenSettings adds measuring
    base = (
        {k: v for k, v in settings.model_dump(exclude_unset=True).items() if k in fields}
        if settings is not None
        else {}
    )
    settings = checked_settings(AdversarialTrainingSettings, {**base, **overrides})
    assert settings is not None
    check_training_data(model, x, y)
    start = time.perf_counter()
    student = trainable_copy(model, name=f"{model.name}-{settings.method}")
    gen = make_generator(seed)
    order = torch.randperm(len(x), generator=make_generator(seed + 1))
    # only fast training needs the monitor (catastrophic overfitting); the others train on all
    n_monitor = min(settings.monitor_samples, len(x) // 5) if settings.method == "fast" else 0
    mon, train = order[:n_monitor], order[n_monitor:]
    mx, my = x[mon], y[mon]
    tx, ty = x[train], y[train]
    perturber = _Perturber(settings, gen)
    result = AdversarialTrainingResult(
        student, settings.method, train_samples=len(tx), monitor_samples=n_monitor
    )
    best: dict[str, Any] = {"pgd": -1.0, "fgsm": None, "state": None, "epoch": None}
    watch = settings.method == "fast"
    measure = monitor or (
        lambda m, xs, ys: pgd_fgsm_accuracy(m, xs, ys, settings.eps, settings.norm, seed)
    )

    def on_epoch(epoch: int, loss: float) -> bool:
        pgd_acc = fgsm_acc = None
        if n_monitor:
            pgd_acc, fgsm_acc = measure(student, mx, my)
        result.epochs.append(
            EpochRecord(epoch + 1, perturber.method, perturber.eps, loss, pgd_acc, fgsm_acc)
        )
        stop = False
        if pgd_acc is not None and watch and perturber.method == "fast":
            if pgd_acc > best["pgd"] and not (
                fgsm_acc is not None and fgsm_acc - pgd_acc >= settings.overfit_gap
            ):
                best.update(
                    pgd=pgd_acc,
                    fgsm=fgsm_acc,
                    epoch=epoch + 1,
                    state=copy.deepcopy(student.module.state_dict()),
                )
            reason = _collapsed(pgd_acc, fgsm_acc, best, settings)
            if reason:
                stop = _on_overfit(student, result, settings, perturber, best, epoch + 1, reason)
        perturber.eps = settings.eps_at(epoch + 1)
        return stop

    try:
        fit(
            student,
            tx,
            ty,
            epochs=settings.epochs,
            lr=settings.lr,
            batch_size=settings.batch_size,
            seed=seed,
            transform=perturber.transform,
            extra_loss=perturber.extra_loss if settings.method == "trades" else None,
            progress=progress,
            task=f"hardening ({settings.method})",
            on_epoch=on_epoch,
        )
    finally:
        for p in student.parameters():
            p.requires_grad_(True)
        student.eval()
    result.best_epoch = best["epoch"]
    result.seconds = time.perf_counter() - start
    return result


def _collapsed(
    pgd_acc: float, fgsm_acc: float | None, best: dict[str, Any], settings: Any
) -> str:
    """Why this epoch shows catastrophic overfitting ("" when it does not). Two signatures
    (Wong et al. 2020): PGD accuracy fell ``overfit_drop`` below its best while FGSM accuracy
    held or rose; or FGSM accuracy stands ``overfit_gap`` above PGD accuracy, the model having
    learnt to beat the one-step attack only (on digits at eps 0.3 with a 2-eps step, FGSM
    accuracy rose to 0.65 while PGD accuracy never left 0.05, so there was no best to fall from).
    """
    if fgsm_acc is None:
        return ""
    fgsm_then = best["fgsm"] if best["fgsm"] is not None else 0.0
    if best["pgd"] - pgd_acc >= settings.overfit_drop and fgsm_acc >= fgsm_then - 0.02:
        return (
            f"PGD accuracy on the held-apart batch fell from {best['pgd']:.2f} (epoch "
            f"{best['epoch']}) to {pgd_acc:.2f} while FGSM accuracy is {fgsm_acc:.2f}"
        )
    if fgsm_acc - pgd_acc >= settings.overfit_gap:
        return (
            f"FGSM accuracy on the held-apart batch is {fgsm_acc:.2f} but PGD accuracy only "
            f"{pgd_acc:.2f}: the model masks the one-step gradient"
        )
    return ""


def _on_overfit(
    student: Any,
    result: AdversarialTrainingResult,
    settings: AdversarialTrainingSettings,
    perturber: _Perturber,
    best: dict[str, Any],
    epoch: int,
    reason: str,
) -> bool:
    """Restore the best epoch's weights; fall back to PGD training or stop (the setting)."""
    result.overfit_epoch = epoch
    said = f"catastrophic overfitting at epoch {epoch}: {reason}"
    if best["state"] is not None:
        student.module.load_state_dict(best["state"])
        said += f"; restored the weights of epoch {best['epoch']}"
    if settings.on_overfit == "fallback":
        perturber.method = "pgd"
        result.events.append(said + f" and trained on with pgd ({settings.steps} steps)")
        return False
    result.events.append(said + " and stopped")
    return True


__all__ = [
    "METHODS",
    "AdversarialTrainingResult",
    "AdversarialTrainingSettings",
    "EpochRecord",
    "adversarial_train",
    "check_training_data",
    "checked_settings",
    "kl_objective",
    "pgd_fgsm_accuracy",
    "pgd_examples",
]
