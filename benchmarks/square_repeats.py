"""Square Linf with and without repeated proposals: same strength, fewer queries?

Run:  python benchmarks/square_repeats.py [--samples 300] [--queries 5000] [--seeds 0 1]

Same model (digits SmallCNN, as in tests/conftest.py), samples and seeds; the only
difference is ``avoid_repeats``: False is the paper's draw with replacement, True
never asks a deterministic oracle a proposal it already rejected from the same point.
Success is counted over the samples the model classifies correctly.
"""

from __future__ import annotations

import argparse
import time

import torch
from _digits_model import digits_subject

from mlwarden.attacks.evasion.square import SquareAttack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = digits_subject(args.samples)
    x, y = data.x, data.y
    print(f"{'eps':>5} {'seed':>4} {'draw':<14}{'success':>10}{'queries':>10}{'seconds':>9}")
    totals: dict[bool, list[float]] = {False: [0, 0, 0.0], True: [0, 0, 0.0]}
    for eps in args.eps:
        for seed in args.seeds:
            for avoid in (False, True):
                start = time.perf_counter()
                res = SquareAttack(eps, queries=args.queries, seed=seed, avoid_repeats=avoid)(
                    model, x, y
                )
                seconds = time.perf_counter() - start
                fooled = int(res.success[res.clean_correct].sum())
                total = totals[avoid]
                total[0] += fooled
                total[1] += res.queries
                total[2] += seconds
                draw = "no repeats" if avoid else "paper"
                print(
                    f"{eps:>5} {seed:>4} {draw:<14}{fooled:>5}/{int(res.clean_correct.sum()):<4}"
                    f"{res.queries:>10}{seconds:>9.1f}",
                    flush=True,
                )
    paper, ours = totals[False], totals[True]
    print(
        f"\nall runs: fooled {int(paper[0])} (paper) vs {int(ours[0])} (no repeats); "
        f"queries {paper[1] / ours[1]:.1f}x fewer; time {paper[2] / ours[2]:.1f}x less"
    )


if __name__ == "__main__":
    main()
