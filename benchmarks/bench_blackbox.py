"""Side-by-side: mlwarden's black-box attacks vs torchattacks and IBM ART, in one run.

Install the peers for this benchmark only (they are not mlwarden dependencies):

    pip install --no-deps torchattacks           # declares torchvision/old requests; not needed
    pip install adversarial-robustness-toolbox

Run:

    python benchmarks/bench_blackbox.py [--samples 100] [--queries 1000] [--hsj-iter 10]

Same model (SmallCNN trained on scikit-learn digits, seed 0, as in tests/conftest.py),
same held-out samples, same eps and query budget for every tool. Queries are counted by
a wrapper around the model that every tool calls (samples passed through ``forward``),
so the tools' own bookkeeping is not trusted. Reported per attack: success rate over the
samples the model classifies correctly, queries per sample (total / samples), seconds,
and the ratios peer / mlwarden. HopSkipJump is a minimal-perturbation attack: it is run
for the same number of iterations and compared on the median L2 distance it reaches and
on the share of samples within ``--hsj-eps``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlwarden.attacks.evasion.hopskipjump import HopSkipJump
from mlwarden.attacks.evasion.square import SquareAttack
from mlwarden.core import Classifier
from mlwarden.core.oracle import ClassifierOracle
from mlwarden.core.training import fit
from mlwarden.io.dataset import load_builtin
from mlwarden.models import SmallCNN


class CountingModel(nn.Module):
    """The classifier's logits, counting every sample that goes through ``forward``."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += len(x)
        return self.classifier(x.float())  # ART's HopSkipJump hands in float64


@dataclass
class Row:
    tool: str
    attack: str
    success: float
    queries: float
    seconds: float
    extra: str = ""


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def success_rate(
    classifier: Classifier,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
    x: torch.Tensor,
    eps: float,
    norm: str,
) -> float:
    """Share of correctly classified samples misclassified AND within eps (checked here)."""
    with torch.no_grad():
        fooled = classifier.predict(x_adv.float()) != y
    delta = (x_adv.float() - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    inside = size <= eps * (1 + 1e-5) + 1e-6
    return float((fooled & inside)[correct].float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--linf-eps", type=float, default=0.1)
    parser.add_argument("--l2-eps", type=float, default=1.0)
    parser.add_argument("--hsj-iter", type=int, default=10)
    parser.add_argument("--hsj-eps", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    data = load_builtin("digits")
    train, test = data.split(0.75, seed=0)
    torch.manual_seed(0)
    module = SmallCNN()
    fit(module, train.x, train.y, epochs=15, lr=2e-3, batch_size=64, seed=0)
    clf = Classifier(module, data.spec(), name="digits-cnn").eval()
    x, y = test.x[: args.samples], test.y[: args.samples]
    correct = clf.predict(x) == y
    print(
        f"model: SmallCNN on digits, clean accuracy {float(correct.float().mean()):.3f} "
        f"on {len(x)} held-out samples; budget {args.queries} queries/sample\n"
    )

    have_ta = importlib.util.find_spec("torchattacks") is not None
    have_art = importlib.util.find_spec("art") is not None
    rows: list[Row] = []

    for norm, eps in (("linf", args.linf_eps), ("l2", args.l2_eps)):
        label = f"Square {norm} eps={eps}"
        oracle = ClassifierOracle(clf)
        res, secs = timed(SquareAttack(eps, norm=norm, queries=args.queries, seed=0), oracle, x, y)
        rows.append(
            Row(
                "mlwarden",
                label,
                success_rate(clf, res.x_adv, y, correct, x, eps, norm),
                oracle.queries / len(x),
                secs,
            )
        )
        if have_ta:
            import torchattacks

            counted = CountingModel(clf)
            atk = torchattacks.Square(
                counted,
                norm="Linf" if norm == "linf" else "L2",
                eps=eps,
                n_queries=args.queries,
                n_restarts=1,
                seed=0,
            )
            adv, secs = timed(atk, x, y)
            rows.append(
                Row(
                    "torchattacks",
                    label,
                    success_rate(clf, adv, y, correct, x, eps, norm),
                    counted.queries / len(x),
                    secs,
                )
            )
        if have_art:
            import numpy as np
            from art.attacks.evasion import SquareAttack as ArtSquare
            from art.estimators.classification import PyTorchClassifier

            counted = CountingModel(clf)
            est = PyTorchClassifier(
                counted,
                loss=nn.CrossEntropyLoss(),
                input_shape=(1, 8, 8),
                nb_classes=10,
                clip_values=(0.0, 1.0),
            )
            atk = ArtSquare(
                est,
                norm=np.inf if norm == "linf" else 2,
                eps=eps,
                max_iter=args.queries,
                nb_restarts=1,
                batch_size=len(x),
                verbose=False,
            )
            np.random.seed(0)
            adv, secs = timed(atk.generate, x.numpy(), y.numpy())
            adv = torch.from_numpy(adv)
            rows.append(
                Row(
                    "ART",
                    label,
                    success_rate(clf, adv, y, correct, x, eps, norm),
                    counted.queries / len(x),
                    secs,
                )
            )

    # HopSkipJump: same iterations; compare reached distance and success within eps
    label = f"HopSkipJump l2 {args.hsj_iter} iter"
    oracle = ClassifierOracle(clf, output="labels")
    hsj = HopSkipJump(norm="l2", max_iter=args.hsj_iter, queries=10**6, seed=0)
    res, secs = timed(hsj, oracle, x, y)
    dist = res.perturbation_norm[correct]
    rows.append(
        Row(
            "mlwarden",
            label,
            success_rate(clf, res.x_adv, y, correct, x, args.hsj_eps, "l2"),
            oracle.queries / len(x),
            secs,
            f"median L2 {float(dist.median()):.3f}",
        )
    )
    if have_art:
        import numpy as np
        from art.attacks.evasion import HopSkipJump as ArtHSJ
        from art.estimators.classification import PyTorchClassifier

        counted = CountingModel(clf)
        est = PyTorchClassifier(
            counted,
            loss=nn.CrossEntropyLoss(),
            input_shape=(1, 8, 8),
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        atk = ArtHSJ(
            est,
            norm=2,
            max_iter=args.hsj_iter,
            max_eval=10000,
            init_eval=100,
            init_size=100,
            batch_size=256,
            verbose=False,
        )
        np.random.seed(0)
        adv, secs = timed(atk.generate, x.numpy(), y.numpy())
        adv = torch.from_numpy(adv)
        d = (adv.float() - x).flatten(1).norm(dim=1)
        fooled = clf.predict(adv.float()) != y
        d = torch.where(fooled, d, torch.full_like(d, float("inf")))[correct]
        rows.append(
            Row(
                "ART",
                label,
                success_rate(clf, adv, y, correct, x, args.hsj_eps, "l2"),
                counted.queries / len(x),
                secs,
                f"median L2 {float(d.median()):.3f}",
            )
        )

    print(
        f"{'attack':<28} {'tool':<13} {'success':>8} {'queries/sample':>15} {'seconds':>9} "
        f"{'x time':>7} {'x queries':>9}  note"
    )
    base: dict[str, Row] = {r.attack: r for r in rows if r.tool == "mlwarden"}
    for r in rows:
        b = base[r.attack]
        t_ratio = r.seconds / b.seconds if b.seconds else float("nan")
        q_ratio = r.queries / b.queries if b.queries else float("nan")
        print(
            f"{r.attack:<28} {r.tool:<13} {r.success:>8.3f} {r.queries:>15.1f} {r.seconds:>9.2f} "
            f"{t_ratio:>7.2f} {q_ratio:>9.2f}  {r.extra}"
        )
    print(
        "\nsuccess: misclassified and within eps (HSJ: within --hsj-eps), over correctly "
        "classified samples;\nx time / x queries: peer divided by mlwarden (>1 means the "
        "peer is slower / spends more queries)."
    )
    if not have_ta or not have_art:
        print(
            "missing peers:",
            ", ".join(n for n, h in (("torchattacks", have_ta), ("ART", have_art)) if not h),
        )


if __name__ == "__main__":
    main()
