"""Adversarial training side by side: mlwarden PGD-AT and TRADES vs IBM ART's trainers.

Install the peer first (benchmarks only):  pip install .[bench]   (adversarial-robustness-toolbox)

Run:  python benchmarks/bench_adversarial_training.py [--epochs 30] [--samples 450] [--threads 2]

Every trainer starts from the same undefended digits SmallCNN (8x8 images in [0, 1], trained
15 epochs as benchmarks/_digits_model.py does) and trains it for the same number of epochs,
at the same L-inf eps (0.1), inner steps (10) and step size (2.5 * eps / steps), batch 64,
Adam at the same learning rate:

- mlwarden ``pgd`` and ``trades``: `adversarial_train` with the defaults of
  `mlwarden harden` (which add a linear eps ramp over the first epochs);
- ART ``AdversarialTrainerMadryPGD`` and ``AdversarialTrainerTRADESPyTorch`` (beta 6).

Each trained model is then measured the same way, on held-out digits: clean accuracy and
robust accuracy under mlwarden's ``standard`` preset (APGD-CE, APGD-T, Square) at L-inf 0.1.
The table gives training time, and the ratios mlwarden / ART (robust accuracy) and
ART / mlwarden (time: above 1 means mlwarden is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mlwarden.core import Classifier
from mlwarden.core.training import fit
from mlwarden.defenses.training.adversarial import adversarial_train
from mlwarden.defenses.training.hardening_settings import HardenSettings
from mlwarden.evaluation.robustness import evaluate_robustness
from mlwarden.io.dataset import load_builtin
from mlwarden.models import SmallCNN


def undefended(train_x: torch.Tensor, train_y: torch.Tensor, spec: object) -> Classifier:
    torch.manual_seed(0)
    model = Classifier(SmallCNN(), spec, name="digits-cnn")  # type: ignore[arg-type]
    fit(model, train_x, train_y, epochs=15, lr=2e-3, batch_size=64, seed=0)
    return model


def measure(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    result = evaluate_robustness(model, x, y, eps, preset="standard", seed=0)
    return result.clean_accuracy, result.robust_accuracy(eps)


def art_train(
    base: Classifier, x: torch.Tensor, y: torch.Tensor, method: str, s: HardenSettings
) -> tuple[Classifier, float]:
    """Train a copy of ``base`` with ART's trainer ``method`` ('pgd' or 'trades')."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainerMadryPGD, AdversarialTrainerTRADESPyTorch
    from art.estimators.classification import PyTorchClassifier

    from mlwarden.core.training import trainable_copy

    copy = trainable_copy(base, name=f"art-{method}")
    module = copy.module
    est = PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(module.parameters(), lr=s.lr),
        input_shape=tuple(base.spec.shape),
        nb_classes=base.spec.num_classes,
        clip_values=base.spec.bounds,
        device_type="cpu",
    )
    xs, ys = x.numpy().astype(np.float32), y.numpy()
    alpha = s.step_size()
    start = time.perf_counter()
    if method == "pgd":
        trainer = AdversarialTrainerMadryPGD(
            est, nb_epochs=s.epochs, batch_size=s.batch_size, eps=s.eps, eps_step=alpha,
            max_iter=s.steps, num_random_init=1,
        )
        trainer.fit(xs, ys)
    else:
        attack = ProjectedGradientDescent(
            est, norm=np.inf, eps=s.eps, eps_step=alpha, max_iter=s.steps,
            batch_size=s.batch_size, verbose=False,
        )
        trainer = AdversarialTrainerTRADESPyTorch(est, attack, beta=s.beta)
        trainer.fit(xs, ys, batch_size=s.batch_size, nb_epochs=s.epochs)
    seconds = time.perf_counter() - start
    copy.eval()
    return copy, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=HardenSettings().epochs)
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="pgd,trades", help="comma-separated: pgd, trades")
    parser.add_argument("--skip-art", action="store_true", help="mlwarden rows only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    digits = load_builtin("digits")
    test, train = digits.split(0.25, seed=0)
    test = test.take(args.samples)
    base = undefended(train.x, train.y, digits.spec())
    settings = HardenSettings(epochs=args.epochs, eps=args.eps)
    clean, robust = measure(base, test.x, test.y, args.eps)
    print(
        f"digits SmallCNN, {len(train)} training / {len(test)} held-out samples, L-inf eps "
        f"{args.eps}, {args.epochs} epochs, {settings.steps} steps of {settings.step_size():.4g}, "
        f"{args.threads} threads"
    )
    rows: list[tuple[str, str, float, float, float]] = [("-", "undefended", clean, robust, 0.0)]
    ours: dict[str, tuple[float, float]] = {}
    for method in args.methods.split(","):
        res = adversarial_train(
            base, train.x, train.y, settings.training(), method=method, seed=0
        )
        c, r = measure(res.classifier, test.x, test.y, args.eps)
        rows.append(("mlwarden", method, c, r, res.seconds))
        ours[method] = (r, res.seconds)
        if not args.skip_art:
            model, seconds = art_train(base, train.x, train.y, method, settings)
            c, r = measure(model, test.x, test.y, args.eps)
            rows.append(("ART", method, c, r, seconds))
    print(f"{'tool':10} {'method':11} {'clean':>7} {'robust':>7} {'train s':>8}  ratios")
    for tool, method, c, r, s in rows:
        ratio = ""
        if tool == "ART":
            mine_r, mine_s = ours[method]
            ratio = (
                f"robust mlwarden/ART {mine_r / r if r else float('inf'):.2f}, "
                f"time ART/mlwarden {s / mine_s:.2f}"
            )
        print(f"{tool:10} {method:11} {c:7.4f} {r:7.4f} {s:8.1f}  {ratio}")


if __name__ == "__main__":
    main()
