"""Randomized-smoothing certification as users run it: ``mlwarden evaluate certify`` with its
defaults (sigma 0.25, n0 100, n 100,000, alpha 0.001, 500 samples), and IBM ART's
``PyTorchRandomizedSmoothing.certify`` side by side on the same model, data and noise.

Install the peer first (benchmarks only):  pip install .[bench]   (ART, and statsmodels,
which ART's certify imports for its Clopper-Pearson bound)

Run:  python benchmarks/bench_certify.py [--samples 500] [--n 100000] [--threads 1]
      [--art-samples 500] [--no-art]

The subject is a tiny CNN (one 3x3 stride-2 conv with 8 channels, two linear layers; 4.5k
parameters) trained on 70% of the sklearn digits with Gaussian noise (sigma 0.25) added to
each batch, as Cohen et al. train base models; it is saved as a ``.pt2`` and certified on
the held-out digits (``.npz``) by the CLI in a child process, so the time includes what a
user waits for (start, load, scan of the model file). The table gives wall time, the
child's CPU time, the load average of the machine, certified accuracy at each radius and
the abstain rate; ART's row gives its ratio to mlwarden's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SIGMA = 0.25
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def noise_trained_subject(folder: Path, samples: int) -> tuple[Path, Path, nn.Module, object]:
    """Train the tiny CNN with Gaussian noise; save it (.pt2) and the held-out digits (.npz)."""
    from mlwarden.core import Classifier
    from mlwarden.core.training import fit
    from mlwarden.io.dataset import load_builtin
    from mlwarden.io.export import save_pt2

    digits = load_builtin("digits")
    train, test = digits.split(0.7, seed=0)
    test = test.take(samples)
    torch.manual_seed(0)
    module = tiny_cnn()
    gen = torch.Generator().manual_seed(1)
    fit(
        module,
        train.x,
        train.y,
        epochs=40,
        lr=3e-3,
        batch_size=64,
        seed=0,
        transform=lambda _m, xb, _y: xb + SIGMA * torch.randn(xb.shape, generator=gen),
    )
    model = Classifier(module, digits.spec(), name="digits-tiny-cnn-noise0.25")
    model_path, data_path = folder / "tiny_cnn.pt2", folder / "heldout.npz"
    save_pt2(model, model_path)
    np.savez(data_path, x=test.x.numpy(), y=test.y.numpy())
    print(
        f"tiny CNN ({sum(p.numel() for p in module.parameters())} parameters), noise-trained; "
        f"clean accuracy on {len(test)} held-out digits {model.accuracy(test.x, test.y):.4f}"
    )
    return model_path, data_path, module, test


def run_cli(model: Path, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """``mlwarden evaluate certify`` with the defaults (only --samples/--n if changed)."""
    cmd = [
        sys.executable, "-m", "mlwarden.cli.main", "evaluate", "certify",
        "--model", str(model), "--data", str(data), "--format", "json",
        "--output", str(out), "--fail-on", "never", "--no-progress",
    ]  # fmt: skip
    if args.samples != 500:
        cmd += ["--samples", str(args.samples)]
    if args.n != 100_000:
        cmd += ["--n", str(args.n)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(out.read_text(encoding="utf-8"))
    return {
        "wall": wall,
        "cpu": cpu,
        "load": (load, os.getloadavg()[0]),
        "metrics": report["metrics"],
        "command": " ".join(cmd[1:]).replace("-m mlwarden.cli.main", "mlwarden"),
    }


def run_art(module: nn.Module, test: object, args: argparse.Namespace) -> dict | None:
    """ART's certify on the same module and the first ``--art-samples`` held-out digits."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        print("ART is not installed (pip install .[bench]): its row is left out")
        return None
    x = test.x[: args.art_samples].numpy()  # type: ignore[attr-defined]
    y = test.y[: args.art_samples].numpy()  # type: ignore[attr-defined]
    art = PyTorchRandomizedSmoothing(
        model=module.eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=None,  # no clipping of the noisy samples, as mlwarden and Cohen et al.
        sample_size=100,  # n0
        scale=SIGMA,
        alpha=0.001,
        device_type="cpu",
    )
    np.random.seed(0)
    load = os.getloadavg()[0]
    start_cpu, start = time.process_time(), time.perf_counter()
    prediction, radius = art.certify(x, n=args.n, batch_size=4096)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    correct = prediction == y
    return {
        "wall": wall,
        "cpu": cpu,
        "load": (load, os.getloadavg()[0]),
        "samples": len(x),
        "accuracy": {r: float(np.mean(correct & (radius >= r))) for r in RADII},
        "abstain": float(np.mean(prediction == -1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--n", type=int, default=100_000)
    # one torch thread: on shared cores two threads were 13x slower here (docs/certification.md)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--art-samples", type=int, default=500)
    parser.add_argument("--no-art", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, data, module, test = noise_trained_subject(folder, args.samples)
        ours = run_cli(model, data, folder / "report.json", args)
        art = None if args.no_art else run_art(module, test, args)
    m = ours["metrics"]
    print(f"\n{os.cpu_count()} CPUs, {args.threads} threads; load average (1 min) at start/end")
    print(f"command: {ours['command']}")
    head = f"{'tool':<10} {'samples':>7} {'n':>7} {'wall s':>8} {'cpu s':>8} {'load':>11} "
    head += " ".join(f"{'@' + format(r, 'g'):>6}" for r in RADII) + f" {'abstain':>7} {'ratio':>6}"
    print(head)
    acc = " ".join(f"{m[f'certified.accuracy@{r:g}']:>6.3f}" for r in RADII)
    print(
        f"{'mlwarden':<10} {m['certified.samples']:>7} {args.n:>7} {ours['wall']:>8.1f} "
        f"{ours['cpu']:>8.1f} {ours['load'][0]:>5.1f}/{ours['load'][1]:<5.1f} {acc} "
        f"{m['certified.abstain_rate']:>7.3f} {1.0:>6.2f}"
    )
    if art is not None:
        acc = " ".join(f"{art['accuracy'][r]:>6.3f}" for r in RADII)
        scale = m["certified.samples"] / art["samples"]  # per-sample time, same count
        print(
            f"{'ART':<10} {art['samples']:>7} {args.n:>7} {art['wall']:>8.1f} "
            f"{art['cpu']:>8.1f} {art['load'][0]:>5.1f}/{art['load'][1]:<5.1f} {acc} "
            f"{art['abstain']:>7.3f} {art['wall'] * scale / ours['wall']:>6.2f}"
        )
        print("ratio: ART's wall time per sample over mlwarden's (higher = mlwarden faster)")


if __name__ == "__main__":
    main()
