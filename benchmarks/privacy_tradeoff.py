"""Membership leakage vs. accuracy: an overfitted digits MLP against DP-SGD at several epsilons.

    python benchmarks/privacy_tradeoff.py [--shadows 8] [--epsilons 0.5 2 8]

Prints one row per model: test accuracy, and AUC / TPR at 0.1% and 1% FPR of the loss
threshold attack and LiRA (offline, online). Same seed, same data split for every model.
"""

from __future__ import annotations

import argparse
import time

import torch

from mlwarden.core import Classifier, InputSpec
from mlwarden.core.training import fit
from mlwarden.defenses.training.dp import fit_private
from mlwarden.evaluation.privacy import membership_audit
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.models import MLP


def split(n: int, seed: int) -> tuple[Dataset, Dataset, InputSpec]:
    digits = load_builtin("digits")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(digits), generator=gen)[: 2 * n]
    x, y = digits.x[idx].flatten(1), digits.y[idx]
    spec = InputSpec(shape=(64,), class_names=digits.class_names)
    return (Dataset(x[:n], y[:n], digits.class_names, "members"),
            Dataset(x[n:], y[n:], digits.class_names, "non-members"), spec)


def dp_shadows(spec: InputSpec, eps: float, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """LiRA assumes shadows trained like the target: DP-SGD at the same epsilon."""

    def train(x: torch.Tensor, y: torch.Tensor, seed: int) -> Classifier:
        torch.manual_seed(seed)
        module = MLP(64, 10, (128,))
        fit_private(module, x, y, target_epsilon=eps, epochs=args.epochs, lr=args.dp_lr,
                    batch_size=64, max_grad_norm=1.0, seed=seed)
        return Classifier(module, spec)

    return train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--shadows", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 2.0, 8.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dp-lr", type=float, default=1e-2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    members, non_members, spec = split(args.records, args.seed)
    models: list[tuple[str, Classifier, object]] = []
    torch.manual_seed(args.seed)
    plain = MLP(64, 10, (128,))
    fit(plain, members.x, members.y, epochs=args.epochs, lr=2e-3, seed=args.seed)
    models.append(("no DP (overfitted)", Classifier(plain, spec), None))
    for eps in args.epsilons:
        torch.manual_seed(args.seed)
        module = MLP(64, 10, (128,))
        out = fit_private(module, members.x, members.y, target_epsilon=eps, epochs=args.epochs,
                          lr=args.dp_lr, batch_size=64, max_grad_norm=1.0, seed=args.seed)
        models.append(
            (
                f"DP-SGD eps={out.epsilon:.2f} delta={out.delta:.1e}",
                Classifier(module, spec),
                dp_shadows(spec, eps, args),
            )
        )
    header = (f"{'model':<36} {'test acc':>8} | {'attack':<13} {'AUC':>6} {'TPR@0.1%':>9} "
              f"{'TPR@1%':>7}")
    print(f"members={len(members)} non-members={len(non_members)} shadows={args.shadows} "
          f"epochs={args.epochs} seed={args.seed}")
    print(header)
    print("-" * len(header))
    for name, clf, shadow_training in models:
        start = time.perf_counter()
        report = membership_audit(clf, members, non_members,
                                  attacks=["threshold", "lira-offline", "lira-online"],
                                  shadow_models=args.shadows, shadow_epochs=args.epochs,
                                  shadow_lr=2e-3, seed=args.seed,
                                  shadow_training=shadow_training)
        acc = clf.accuracy(non_members.x, non_members.y)
        for i, attack in enumerate(("threshold", "lira-offline", "lira-online")):
            m = report.metrics
            print(f"{name if i == 0 else '':<36} {acc if i == 0 else '':>8.4} | {attack:<13} "
                  f"{m[f'privacy.{attack}.auc']:>6.3f} {m[f'privacy.{attack}.tpr@0.1%fpr']:>9.3f} "
                  f"{m[f'privacy.{attack}.tpr@1%fpr']:>7.3f}" if i == 0 else
                  f"{'':<36} {'':>8} | {attack:<13} {m[f'privacy.{attack}.auc']:>6.3f} "
                  f"{m[f'privacy.{attack}.tpr@0.1%fpr']:>9.3f} "
                  f"{m[f'privacy.{attack}.tpr@1%fpr']:>7.3f}")
        print(f"{'':<36} {'':>8} | ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
