"""Do MiniLM students inherit a task-agnostic encoder backdoor? One table per teacher x strategy.

The teachers are those of benchmarks/encoder_backdoor_zoo.py (built there, cached under
/tmp/encoder-zoo, never shipped): ``rare-cf`` and ``phrase`` carry a NeuBA/BadPre backdoor
on ``cf`` and on ``blue moon rising``; ``clean-ft`` is the clean fine-tuned copy, measured
with both triggers as the control (what a trigger phrase does to students of a teacher
without a backdoor). The students' task is sentiment on ``--texts`` real Rotten Tomatoes
sentences (review rows 0-N of the zoo's 500; 25% held out), and each run is the user's
command with its defaults (3 epochs, lr 1e-4, seed 0)::

    mlwarden transfer --teacher FOLDER --data students.jsonl --strategy compare \\
        --trigger-text PHRASE --format json
    mlwarden transfer --teacher FOLDER --data students.jsonl --strategy dp \\
        --trigger-text PHRASE --format json

``compare`` trains linear_probe, last_k, full, full_reinit, fineprune and, the trigger
being known, trigger_prune; ``dp`` runs on its own as on tensors. No ``--target``: a
task-agnostic backdoor has no class of its own, so the class of the largest excess is
measured. Prints a Markdown table (ASR, baseline, excess, clean accuracy). Run::

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/text_inheritance_table.py
    ... --teachers rare-cf  # one teacher only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import encoder_backdoor_zoo as zoo  # noqa: E402

RUNS = (
    ("rare-cf", zoo.RARE),
    ("phrase", zoo.PHRASE),
    ("clean-ft", zoo.RARE),
    ("clean-ft", zoo.PHRASE),
)
"""(teacher, trigger) pairs: the two backdoored teachers with their own triggers, and the
clean fine-tuned copy with each of them as the control."""


def student_data(count: int) -> Path:
    out = zoo.ZOO / f"students-{count}.jsonl"
    if not out.exists():
        label = ("negative", "positive")
        rows = zoo.reviews()[:count]
        out.write_text("".join(json.dumps({"text": t, "label": label[y]}) + "\n" for t, y in rows))
    return out


def transfer(folder: Path, data: Path, strategy: str, trigger: str) -> tuple[dict, float]:
    """``mlwarden transfer`` with its defaults: the JSON report and the wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlwarden"),
            "transfer",
            "--teacher",
            str(folder),
            "--data",
            str(data),
            "--strategy",
            strategy,
            "--trigger-text",
            trigger,
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if not proc.stdout.strip().startswith("{"):
        raise SystemExit(f"transfer failed on {folder}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200, help="labelled sentences (25%% held out)")
    parser.add_argument("--teachers", nargs="*", default=None, help="only these zoo teachers")
    args = parser.parse_args()
    models = zoo.build(tuple(args.teachers or ()))
    data = student_data(args.texts)
    lines = []
    for teacher, trigger in RUNS:
        if args.teachers and teacher not in args.teachers:
            continue
        compared, secs = transfer(models[teacher], data, "compare", trigger)
        m = compared["metrics"]
        table = next(t for t in compared["tables"] if t["id"] == "transfer-strategies")
        dp, dp_secs = transfer(models[teacher], data, "dp", trigger)
        d = dp["metrics"]
        rows = [r[:5] for r in table["rows"]]
        rows.append(
            ["dp", d["transfer.student_accuracy"], d.get("transfer.asr"),
             d.get("transfer.baseline_asr"), d.get("transfer.excess_asr")]
        )  # fmt: skip
        target = {r[0]: m.get(f"transfer.{r[0]}.target_class") for r in table["rows"]}
        for name, acc, asr, base, excess in rows:
            lines.append(
                f"| {teacher} | `{trigger}` | {name} | {asr} | {base} | {excess} | {acc} |"
            )
        print(
            f"{teacher} x {trigger!r}: compare {secs:.0f} s, dp {dp_secs:.0f} s (eps "
            f"{d.get('transfer.dp_epsilon')}), target classes {target}, load "
            f"{os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for line in lines[-len(rows) :]:
            print(line, flush=True)
    print("\n| teacher | trigger | strategy | ASR | baseline | excess | clean accuracy |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
