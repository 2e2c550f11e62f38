"""The evasion audit in one process vs sharded on a local Ray cluster, same model and data.

Run:  python benchmarks/bench_distributed_audit.py [--samples 450] [--preset standard]
      [--shard-size 128] [--cpus 2]

The subject is the digits SmallCNN of the other benchmarks (`_digits_model.py`), saved as a
``.pt2`` file, and its held-out digits as ``.npz``: the audit runs exactly as ``mlwarden
audit --model model.pt2 --data test.npz --check evasion [--ray auto]`` runs it
(`run_audit`, the evasion check's defaults unless ``--preset``/``--samples`` say otherwise).

Printed: the single-process audit (twice: the first run pays torch's one-time costs); the
cluster's start (``ray.init`` with ``--cpus``); the
first sharded audit (workers start, import torch, gate and load the model) and a second one
on warm workers; each audit's robust accuracy; the overhead ratios (warm sharded / second
single run, cold sharded / first single run). On two
cores there is no speed-up to expect: the figure is what sharding costs where it cannot pay.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _digits_model import digits_subject

from mlwarden.audit.runner import run_audit
from mlwarden.config import AuditSection, DataSection, MlwardenConfig, ModelSection, validate_checks
from mlwarden.io.export import save_pt2


def audit(model: Path, data: Path, out: Path, checks: dict[str, Any], **extra: Any) -> Any:
    config = MlwardenConfig(
        model=ModelSection(path=str(model)),
        data=DataSection(source=str(data)),
        audit=AuditSection(output_dir=str(out), formats=["json"], **extra),
        checks=validate_checks({"evasion": checks}),
    )
    start = time.perf_counter()
    report = run_audit(config, only=["evasion"], write=False).report
    return time.perf_counter() - start, report


def robust(report: Any) -> str:
    keys = [k for k in report.headline if "robust_accuracy" in k]
    return ", ".join(f"{k.split('.robust_accuracy')[-1]}={report.metrics[k]:.4f}" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--preset", default=None, help="default: the evasion check's own")
    parser.add_argument("--shard-size", type=int, default=None, help="default: 128")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the single-process run uses one core, as a Ray task does

    model, test = digits_subject(args.samples)
    checks: dict[str, Any] = {"samples": args.samples}
    if args.preset:
        checks["preset"] = args.preset
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_file = save_pt2(model, root / "digits-cnn.pt2")
        data_file = root / "test.npz"
        np.savez(data_file, x=test.x.numpy(), y=test.y.numpy())
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
              f"{len(test)} samples, evasion {checks}")  # fmt: skip

        first_s, single = audit(model_file, data_file, root / "first", checks)
        print(f"single process     {first_s:8.1f} s   {robust(single)}")
        single_s, single = audit(model_file, data_file, root / "single", checks)
        print(f"single, again      {single_s:8.1f} s   {robust(single)}")

        import ray

        for attempt in range(3):  # a raylet can miss Ray's fixed 30 s window on a busy machine
            start = time.perf_counter()
            try:
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)  # fmt: skip
                break
            except Exception as exc:
                ray.shutdown()
                print(f"ray.init failed after {time.perf_counter() - start:.1f} s: {exc}")
                if attempt == 2:
                    raise
        print(f"ray.init           {time.perf_counter() - start:8.1f} s   ({args.cpus} CPUs)")
        try:
            sharding = {"ray": "auto", "shard_size": args.shard_size}
            cold_s, cold = audit(model_file, data_file, root / "cold", checks, **sharding)
            print(f"ray, cold workers  {cold_s:8.1f} s   {robust(cold)}")
            warm_s, warm = audit(model_file, data_file, root / "warm", checks, **sharding)
            print(f"ray, warm workers  {warm_s:8.1f} s   {robust(warm)}")
        finally:
            ray.shutdown()
        same = {k: v for k, v in cold.metrics.items() if not k.endswith(".seconds")} == {
            k: v for k, v in warm.metrics.items() if not k.endswith(".seconds")
        }
        print(f"overhead ratio (sharded / single, both warm): {warm_s / single_s:.2f}; "
              f"cold workers / first single run: {cold_s / first_s:.2f}; "
              f"cold and warm sharded runs identical: {same}")  # fmt: skip
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
