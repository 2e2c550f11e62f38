"""PGD side by side: mlwarden vs torchattacks vs IBM ART, same model, data, eps and steps.

Install the peers first (benchmarks only):

    pip install --no-deps torchattacks
    pip install adversarial-robustness-toolbox

Run:  python benchmarks/bench_pgd.py [--samples 450] [--eps 0.1] [--steps 20] [--repeats 3]

Every tool attacks the same trained digits SmallCNN with Linf PGD (random start, step
``eps/4``); the table gives the best wall time over ``--repeats`` runs, the ratio to
mlwarden, and the robust accuracy each attack leaves (lower = stronger attack).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from _digits_model import digits_subject, linf_ok, robust_accuracy


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    assert out is not None
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = digits_subject(args.samples)
    x, y = data.x, data.y
    eps, steps, alpha = args.eps, args.steps, args.eps / 4
    print(
        f"digits SmallCNN, {len(x)} samples, clean accuracy {model.accuracy(x, y):.4f}, "
        f"Linf eps={eps}, steps={steps}, alpha={alpha}, {args.threads} threads"
    )

    rows: list[tuple[str, float, float]] = []
    from mlwarden.attacks.evasion import PGD

    mlw = PGD(eps, alpha=alpha, steps=steps, seed=0)
    t, x_adv = timed(lambda: mlw(model, x, y).x_adv, args.repeats)
    assert linf_ok(x_adv, x, eps)
    rows.append(("mlwarden PGD", t, robust_accuracy(model, x_adv, y)))

    try:
        import torchattacks
    except ImportError:
        print("torchattacks not installed: pip install --no-deps torchattacks")
    else:
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        torch.manual_seed(0)
        t, x_adv = timed(lambda: ta(x, y), args.repeats)
        assert linf_ok(x_adv, x, eps)
        rows.append(("torchattacks PGD", t, robust_accuracy(model, x_adv, y)))

    try:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        print("ART not installed: pip install adversarial-robustness-toolbox")
    else:
        estimator = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(1, 8, 8),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        art = ProjectedGradientDescentPyTorch(
            estimator,
            norm=np.inf,
            eps=eps,
            eps_step=alpha,
            max_iter=steps,
            num_random_init=1,
            batch_size=len(x),
            verbose=False,
        )
        xn = x.numpy()
        t, x_np = timed(lambda: torch.from_numpy(art.generate(xn, y=y.numpy())), args.repeats)
        assert linf_ok(x_np, x, eps)
        rows.append(("ART ProjectedGradientDescentPyTorch", t, robust_accuracy(model, x_np, y)))

    base = rows[0][1]
    print(f"\n{'tool':<38}{'time (s)':>10}{'x mlwarden':>12}{'robust acc':>12}")
    for name, t, acc in rows:
        print(f"{name:<38}{t:>10.3f}{t / base:>12.2f}{acc:>12.4f}")


if __name__ == "__main__":
    main()
