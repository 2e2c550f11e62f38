"""Excess attack success rate of students of clean and of BadNets teachers: the data behind
`mlwarden.defenses.detection.calibration.INHERITANCE`.

What ``mlwarden transfer --strategy compare`` does, unrolled so one trained set of students
serves several triggers: a SmallCNN teacher is trained on one half of digits (clean, or
poisoned with `BadNets(target, rate=0.1, size=3)`), and on the other half (the user's data)
the transfer defaults split off 25% to audit on, train one student per strategy and a clean
reference from scratch (`TransferSettings()`: 10 epochs, lr 1e-3), and `audit_transfer`
grades each student's ASR against the baseline. Clean teachers are measured with given
BadNets patch triggers on every class (what ``--trigger``/``--target`` would hand in, the
most a trigger-shaped perturbation moves a clean pair); BadNets teachers with their own
trigger. Prints every excess ASR and the cut the rule of `calibration.INHERITANCE` gives.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/inheritance_calibrate.py --seeds 3
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from mlwarden.attacks.poisoning import BadNets
from mlwarden.core import Classifier
from mlwarden.core.training import fit
from mlwarden.defenses.detection.calibration import FAR_FACTOR, INHERITANCE, MARGIN
from mlwarden.defenses.training.finetune import STRATEGIES, train_student
from mlwarden.evaluation.transfer import (
    TransferSettings,
    audit_transfer,
    given_trigger,
    reference_model,
)
from mlwarden.io.dataset import load_builtin
from mlwarden.models import SmallCNN


def excesses(teacher: Classifier, user, triggers, seed: int, strategies) -> list[tuple]:
    """(strategy, target, excess ASR, student ASR, baseline) of every student and trigger."""
    settings = TransferSettings()
    test, train = user.split(settings.test_fraction, seed=seed)
    kw = {"epochs": settings.epochs, "lr": settings.lr, "seed": seed}
    reference = reference_model(teacher, train.x, train.y, **kw)
    rows = []
    for strategy in strategies:
        student = train_student(
            teacher,
            train.x,
            train.y,
            strategy=strategy,
            k=settings.k,
            target_epsilon=settings.epsilon,
            **kw,
        ).classifier
        for trigger, target in triggers:
            audit = audit_transfer(
                teacher,
                student,
                test.x,
                test.y,
                known=given_trigger(trigger, target),
                reference=reference,
                eps=settings.eps,
                max_samples=settings.samples,
                seed=seed,
                pgd_steps=1,
            )
            rows.append((strategy, target, audit.excess_asr, audit.student_asr, audit.baseline_asr))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="teacher seeds per kind")
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    args = parser.parse_args()
    teacher_half, user = load_builtin("digits").split(0.5, seed=0)
    patches = [(BadNets(target=t, rate=0.1, size=3), t) for t in range(10)]
    clean, backdoored = [], []
    for seed in range(args.seeds):
        start = time.time()
        torch.manual_seed(seed)
        module = SmallCNN()
        fit(module, teacher_half.x, teacher_half.y, seed=seed, epochs=15, lr=2e-3, batch_size=64)
        teacher = Classifier(module, teacher_half.spec(), name=f"clean-s{seed}")
        rows = excesses(teacher, user, [(a.trigger, t) for a, t in patches], seed, args.strategies)
        clean += rows
        attack, target = patches[(3 * seed + 1) % 10]
        poisoned = attack.poison(teacher_half).data
        torch.manual_seed(seed)
        module = SmallCNN()
        fit(module, poisoned.x, poisoned.y, seed=seed, epochs=15, lr=2e-3, batch_size=64)
        bad = Classifier(module, teacher_half.spec(), name=f"badnets-s{seed}")
        backdoored += excesses(bad, user, [(attack.trigger, target)], seed, args.strategies)
        print(f"# seed {seed}: {time.time() - start:.0f} s", flush=True)
    print("| teacher | strategy | target | excess ASR | student ASR | baseline |")
    print("|---|---|---|---|---|---|")
    for kind, rows in (("clean", clean), ("BadNets", backdoored)):
        for strategy, target, excess, asr, base in rows:
            print(f"| {kind} | {strategy} | {target} | {excess:+.3f} | {asr:.3f} | {base:.3f} |")
    largest = max(r[2] for r in clean)
    cut = math.ceil(largest * (1 + MARGIN) * 100) / 100
    high = math.ceil(FAR_FACTOR * cut * 100) / 100
    print(f"\nclean pairs: {len(clean)}, largest excess {largest:+.3f}")
    print(
        f"cut = largest clean x (1 + {MARGIN:g}), rounded up: {cut:.2f}; high from "
        f"{FAR_FACTOR:g} x cut, rounded up: {high:.2f} (in use: {INHERITANCE.medium:g}, "
        f"{INHERITANCE.high:g})"
    )
    for strategy in args.strategies:
        got = sorted(r[2] for r in backdoored if r[0] == strategy)
        print(
            f"BadNets students, {strategy}: excess {', '.join(f'{e:+.2f}' for e in got)}; "
            f"above the cut {sum(e > cut for e in got)}/{len(got)}, "
            f"high {sum(e >= high for e in got)}/{len(got)}"
        )


if __name__ == "__main__":
    main()
