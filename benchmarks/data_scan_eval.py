"""`mlwarden backdoor scan-data` on clean and 5%-BadNets training sets of digits and breast_cancer.

Models are trained as a user would (`mlwarden.core.training.fit`: a SmallCNN for digits, an
MLP for breast_cancer), exported to ``.pt2``, and scanned by the CLI with its defaults; the
poisoned samples are scored against what the report lists (every detector's findings at or
above medium). Trained files are cached in ``--cache`` (default /tmp/datascan-cache).

    OMP_NUM_THREADS=1 python benchmarks/data_scan_eval.py
    OMP_NUM_THREADS=1 python benchmarks/data_scan_eval.py --data breast_cancer --splits 3

``--splits N`` repeats every row on the training splits of seeds 0..N-1 (clean false alarms
and recall over more than one draw of the data).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mlwarden.attacks.poisoning import BadNets
from mlwarden.core import Classifier
from mlwarden.core.training import fit
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.io.export import save_pt2
from mlwarden.models import MLP, SmallCNN

RATE = 0.05
# (data set, train share, the model a user would train, fit arguments)
SETS = {
    "digits": (0.75, lambda: SmallCNN(), {"epochs": 15, "lr": 2e-3, "batch_size": 64}),
    "breast_cancer": (
        0.7,
        lambda: MLP(30, 2, (64, 64)),
        {"epochs": 60, "lr": 3e-3, "batch_size": 32},
    ),
}
# (name, target, patch size): the breast_cancer patch is a run of 3 features (PatchTrigger on (F,))
POISONS = {"digits": [(0, 3), (7, 2)], "breast_cancer": [(0, 3), (1, 3)]}
SEVERE = {"medium", "high", "critical"}


def prepare(name: str, data: Dataset, seed: int, tag: str, cache: Path) -> tuple[Path, Path]:
    """Train (or reuse) the model on ``data`` and write it and the data where the CLI reads them."""
    _, factory, kwargs = SETS[name]
    model_path, data_path = cache / f"{tag}.pt2", cache / f"{tag}.npz"
    if not model_path.exists():
        torch.manual_seed(seed)
        module = factory()
        fit(module, data.x, data.y, seed=seed, **kwargs)
        save_pt2(Classifier(module, data.spec(), name=tag), model_path)
    np.savez(data_path, x=data.x.numpy(), y=data.y.numpy())
    return model_path, data_path


def scan(model: Path, data: Path, out: Path) -> dict:
    # the installed `mlwarden` console script, run by this interpreter (PYTHONPATH is honoured)
    cli = shutil.which("mlwarden") or str(Path(sys.executable).with_name("mlwarden"))
    cmd = [sys.executable, cli, "backdoor", "scan-data", "--model", str(model)]
    cmd += ["--data", str(data), "-f", "json", "-o", str(out), "--fail-on", "never"]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads(out.read_text())


def listed(report: dict, finding: str | None = None) -> tuple[set[int], list[str]]:
    """Indices listed by findings at or above medium (or by the one ``finding`` id, whatever
    its severity), and their ids."""
    if finding is None:
        severe = [f for f in report["findings"] if f["severity"] in SEVERE]
    else:
        severe = [f for f in report["findings"] if f["id"] == finding]
    return {i for f in severe for i in f["evidence"].get("indices", [])}, [f["id"] for f in severe]


def candidates(report: dict) -> list[str]:
    """``class: share / reclassified / flagged`` of each activation-clustering candidate tested
    (the per-class table: the rates the doc's thresholds are set against)."""
    table = next(t for t in report["tables"] if t["id"] == "backdoor-activation-clustering")
    return [
        f"{row[1]}: {row[2]} / {row[4]}{' FLAGGED' if row[-1] else ''}"
        for row in table["rows"]
        if row[4] != "—"
    ]


def score(flagged: set[int], truth: set[int]) -> str:
    """``precision / recall`` of the listed samples against the poisoned ones."""
    hits = len(flagged & truth)
    precision = f"{hits / len(flagged):.2f}" if flagged else "—"
    return f"{precision} / {hits / len(truth):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/datascan-cache"))
    parser.add_argument("--clean-seeds", type=int, default=3)
    parser.add_argument("--splits", type=int, default=1, help="training splits (seeds 0..N-1)")
    parser.add_argument("--data", choices=tuple(SETS), action="append", help="default: all")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    tested: list[tuple[str, str, list[str]]] = []
    for name, split in [(n, s) for n in args.data or SETS for s in range(args.splits)]:
        share = SETS[name][0]
        train, _ = load_builtin(name).split(share, seed=split)
        where = f"split {split}, " if args.splits > 1 else ""
        for seed in range(args.clean_seeds):
            tag = f"{name}-sp{split}-clean-s{seed}"
            report = scan(*prepare(name, train, seed, tag, args.cache), args.cache / f"{tag}.json")
            flagged, ids = listed(report)
            what = f"{where}clean, seed {seed}"
            rows.append((name, what, len(train), 0, len(flagged), ids, "—", "—", "—"))
            tested.append((name, what, candidates(report)))
        for target, size in POISONS[name]:
            attack = BadNets(target=target, rate=RATE, size=size)
            poisoned = attack.poison(train)
            tag = f"{name}-sp{split}-badnets-t{target}-s{size}"
            paths = prepare(name, poisoned.data, 0, tag, args.cache)
            report = scan(*paths, args.cache / f"{tag}.json")
            flagged, ids = listed(report)
            truth = set(poisoned.poison_index.tolist())
            each = [score(listed(report, f)[0], truth) for f in ("MLW-BKD-010", "MLW-BKD-011")]
            what = f"{where}BadNets {size}-patch -> class {target}"
            tested.append((name, what, candidates(report)))
            rows.append(
                (
                    name,
                    what,
                    len(train),
                    len(truth),
                    len(flagged),
                    ids,
                    score(flagged, truth),
                    *each,
                )
            )
    head = ["data", "training set", "samples", "poisoned", "listed (>= medium)", "findings"]
    head += ["precision / recall", "clustering (010, high)", "spectral (011, low)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, what, n, poison, flagged, ids, both, ac, ss in rows:
        cells = [name, what, n, poison, flagged, ", ".join(ids) or "none", both, ac, ss]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\nCandidates tested (class: candidate share / reclassified without it):")
    for name, what, cells in tested:
        print(f"- {name}, {what}: {'; '.join(cells) or 'none'}")


if __name__ == "__main__":
    main()
