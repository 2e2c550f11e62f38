"""AutoAttack side by side: mlwarden presets vs torchattacks, same model, data and eps.

Install the peer first (benchmarks only):

    pip install --no-deps torchattacks

Run:  python benchmarks/bench_autoattack.py [--samples 200] [--eps 0.1] [--steps 100]

Two comparisons, each in one run on CPU:

1. mlwarden ``standard`` preset (APGD-CE, APGD-T, Square) vs torchattacks
   ``AutoAttack(version="standard")`` (APGD-CE, APGD-T, FAB-T, Square), Linf;
2. mlwarden APGD-CE vs torchattacks APGD (CE loss) at equal eps and steps.

Goals: same or lower robust accuracy, and for (1) at most half the time.

Note: torchattacks 3.5's ``AutoAttack(version="standard")`` builds APGD, APGD-T and
FAB-T with their default ``steps=10`` (the original AutoAttack uses 100). With
``--steps 10`` the peer is exactly ``AutoAttack(version="standard")``; with any other
value it is the same four attacks in torchattacks' ``MultiAttack`` with ``steps`` set
to ``--steps`` (and Square at 5000 queries), so both sides always spend equal budgets.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _digits_model import digits_subject, linf_ok, robust_accuracy


def peer_autoattack(torchattacks: Any, model: torch.nn.Module, eps: float, steps: int) -> Any:
    """torchattacks' AutoAttack standard, with ``steps`` for its gradient attacks."""
    if steps == 10:  # what AutoAttack(version="standard") builds
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0
        )
    common = {"eps": eps, "norm": "Linf", "seed": 0, "n_restarts": 1}
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, loss="ce", steps=steps, **common),
            torchattacks.APGDT(model, n_classes=10, steps=steps, **common),
            torchattacks.FAB(model, multi_targeted=True, n_classes=10, steps=steps, **common),
            torchattacks.Square(model, n_queries=5000, **common),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-autoattack", action="store_true", help="only APGD-CE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = digits_subject(args.samples)
    x, y = data.x, data.y
    eps = args.eps
    print(
        f"digits SmallCNN, {len(x)} samples, clean accuracy {model.accuracy(x, y):.4f}, "
        f"Linf eps={eps}, {args.steps} steps, {args.threads} threads"
    )
    try:
        import torchattacks
    except ImportError:
        raise SystemExit("torchattacks not installed: pip install --no-deps torchattacks") from None
    from mlwarden.attacks.evasion import APGD
    from mlwarden.evaluation import evaluate_robustness

    rows: list[tuple[str, float, float, str]] = []

    def report(name: str, seconds: float, acc: float, group: str) -> None:
        rows.append((name, seconds, acc, group))
        print(f"  done: {name}: {seconds:.2f}s, robust accuracy {acc:.4f}", flush=True)

    # 2. APGD-CE vs APGD-CE
    start = time.perf_counter()
    res = APGD(eps, steps=args.steps, loss="ce", seed=0)(model, x, y)
    t_mlw = time.perf_counter() - start
    assert linf_ok(res.x_adv, x, eps)
    report("mlwarden APGD-CE", t_mlw, robust_accuracy(model, res.x_adv, y), "apgd")
    ta = torchattacks.APGD(
        model, norm="Linf", eps=eps, steps=args.steps, n_restarts=1, loss="ce", seed=0
    )
    start = time.perf_counter()
    x_ta = ta(x, y)
    t_ta = time.perf_counter() - start
    assert linf_ok(x_ta, x, eps)
    report("torchattacks APGD (ce)", t_ta, robust_accuracy(model, x_ta, y), "apgd")

    if not args.skip_autoattack:
        # 1. standard ensembles
        start = time.perf_counter()
        ours = evaluate_robustness(model, x, y, [eps], preset="standard", steps=args.steps, seed=0)
        t_ours = time.perf_counter() - start
        acc_ours = ours.robust_accuracy(eps)
        assert linf_ok(ours.x_adv[eps], x, eps)
        report("mlwarden standard", t_ours, acc_ours, "aa")
        aa = peer_autoattack(torchattacks, model, eps, args.steps)
        start = time.perf_counter()
        x_aa = aa(x, y)
        t_aa = time.perf_counter() - start
        assert linf_ok(x_aa, x, eps)
        report("torchattacks AutoAttack standard", t_aa, robust_accuracy(model, x_aa, y), "aa")
        print(
            "mlwarden standard cost:",
            ", ".join(
                f"{c.attack}: {c.attacked} attacked, {c.fooled} fooled, {c.seconds:.1f}s"
                for c in ours.costs
            ),
        )

    print(f"\n{'attack':<36}{'time (s)':>10}{'x mlwarden':>12}{'robust acc':>12}")
    base = {}
    for name, t, acc, group in rows:
        base.setdefault(group, t)
        print(f"{name:<36}{t:>10.2f}{t / base[group]:>12.2f}{acc:>12.4f}")


if __name__ == "__main__":
    main()
