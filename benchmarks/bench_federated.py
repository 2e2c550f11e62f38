"""The federated-learning table of docs/federated.md, measured through the CLI with its defaults.

Two runs of ``mlwarden federated simulate`` (digits, MLP, 20 clients x 20 rounds, IID,
20% malicious): every strategy against the model-replacement backdoor (with the
attack-free FedAvg reference), then every strategy against the stealthy, norm-bounded
variant. Each run is one Flower simulation; the script prints one Markdown table, the
wall time of each run and the machine's load average, and writes the JSON reports.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_federated.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = (
    ("backdoor", ["--malicious", "0.2", "--attack", "backdoor", "--strategy", "compare"]),
    (
        "stealthy_backdoor",
        ["--malicious", "0.2", "--attack", "stealthy_backdoor", "--strategy", "compare",
         "--no-baseline"],
    ),
)


def start_cli(args: list[str], report: Path) -> tuple[subprocess.Popen, list[str]]:
    cmd = [sys.executable, "-c", "from mlwarden.cli.main import run; run()", "federated",
           "simulate", *args, "--format", "json", "--output", str(report), "--fail-on", "never",
           "--no-progress"]
    log = open(report.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True), cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-federated"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    print("| attack | strategy | clean accuracy | cost vs. attack-free FedAvg | backdoor ASR "
          "| epsilon | median honest / malicious norm | s (20 rounds) | MB / round |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    notes = []
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # both comparisons at once: each is one simulation, and the machine has two cores
    started = [(attack, *start_cli(args, out / f"{attack}.json")) for attack, args in RUNS]
    finished = []
    for attack, proc, cmd in started:
        if proc.wait() != 0:
            log = (out / f"{attack}.log").read_text()[-3000:]
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log}")
        finished.append((attack, time.perf_counter() - start))
    base_acc = None
    for attack, seconds in finished:
        report = json.loads((out / f"{attack}.json").read_text())
        table = next(t for t in report["tables"] if t["id"] == "federated-strategies")
        for row in table["rows"]:
            label, run_attack, acc, cost, asr, eps, honest, bad, secs, nbytes = row
            norms = f"{honest} / {bad}" if bad is not None else f"{honest} / -"
            if label == "fedavg (no attack)":
                base_acc = acc
            shown = "" if base_acc is None else f"{acc - base_acc:+.3f}"
            print(f"| {run_attack} | {label} | {acc:.3f} | {shown} | {asr:.3f} | {eps or ''} "
                  f"| {norms} | {secs:.1f} | {nbytes / 1e6:.2f} |")
        metrics = report["metrics"]
        notes.append(
            f"{attack}: {seconds:.0f} s wall for the whole comparison, engine "
            f"{metrics['federated.engine']} (start-up {metrics['federated.startup_seconds']:.0f}"
            f" s), load average {load:.1f} at start"
        )
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
