"""Model zoos for the backdoor detectors: trained the way users train, cached on disk.

`backdoor_calibrate.py` (the clean CALIBRATION zoo the cuts are chosen on, seeds 100+)
and `backdoor_zoo.py` (the EVALUATION zoo, seeds 200+, clean and backdoored) share the
builders here. Every model is trained with `mlwarden.core.training.fit` on the digits
training split (75%, seed 0) and scanned on the held-out split with the same defaults
``mlwarden backdoor detect`` uses (`BackdoorSettings()`, ``--seed 0``). Trained weights
and the raw per-class trigger sizes are cached under ``$MLW_ZOO_CACHE`` (default
``/tmp/detect-zoo``) so a rerun only recomputes the statistics.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlwarden.attacks.poisoning import BadNets, Blended, PoisoningAttack
from mlwarden.core import Classifier
from mlwarden.core.findings import Report
from mlwarden.core.training import fit
from mlwarden.defenses.detection.model_scan import BackdoorSettings, run_backdoor_scan
from mlwarden.defenses.detection.result import BackdoorScan
from mlwarden.io.dataset import Dataset, load_builtin
from mlwarden.models import MLP, SmallCNN

CACHE = Path(os.environ.get("MLW_ZOO_CACHE", "/tmp/detect-zoo"))


class WideCNN(nn.Module):
    """A third architecture: one 5x5 conv block, global average pooling, a linear head."""

    def __init__(self, width: int = 24, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ModelSpec:
    """One zoo member: architecture, width, training seed and the planted attack (if any)."""

    name: str
    arch: str  # "cnn" (SmallCNN), "mlp" (Flatten + MLP), "gap" (WideCNN), "demo-teacher", ...
    width: int
    seed: int
    attack: PoisoningAttack | None = None

    @property
    def target(self) -> int | None:
        return None if self.attack is None else self.attack.target


def _module(arch: str, width: int) -> nn.Module:
    if arch == "cnn":
        return SmallCNN(width=width)
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), MLP(64, 10, (width, width)))
    if arch == "gap":
        return WideCNN(width=width)
    raise ValueError(f"unknown architecture {arch!r}")


def digits() -> tuple[Dataset, Dataset]:
    """(train, held-out) as the demo and the tests split them."""
    return load_builtin("digits").split(0.75, seed=0)


def _demo_models() -> dict[str, Classifier]:
    """The demo's teacher and student, built by `mlwarden.demo` itself (cached)."""
    from mlwarden.core.progress import null_progress
    from mlwarden.demo import _train_models
    from mlwarden.io.models import load_pt2

    folder = CACHE / "demo"
    if not all((folder / f"{n}.pt2").is_file() for n in ("teacher", "student")):
        _train_models(folder, null_progress)
    return {n: load_pt2(folder / f"{n}.pt2", device="cpu") for n in ("teacher", "student")}


def build(spec: ModelSpec) -> Classifier:
    """Train ``spec`` (or load its cached weights) into a `Classifier`."""
    train, _ = digits()
    data_spec = load_builtin("digits").spec()
    if spec.arch.startswith("demo-"):
        return _demo_models()[spec.arch.removeprefix("demo-")]
    path = CACHE / "models" / f"{spec.name}.pt"
    torch.manual_seed(spec.seed)
    module = _module(spec.arch, spec.width)
    if path.is_file():
        module.load_state_dict(torch.load(path, weights_only=True))
    else:
        data = train if spec.attack is None else spec.attack.poison(train).data
        epochs, lr = (30, 3e-3) if spec.arch == "mlp" else (15, 2e-3)
        fit(module, data.x, data.y, epochs=epochs, lr=lr, batch_size=64, seed=spec.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), path)
    module.eval()
    return Classifier(module, data_spec, name=spec.name)


def _encode(scan: BackdoorScan) -> dict[str, Any]:
    return {
        "method": scan.method,
        "sizes": scan.sizes.tolist(),
        "success": scan.success.tolist(),
        "elapsed_s": scan.elapsed_s,
    }


def scan(spec: ModelSpec, *, refresh: bool = False) -> dict[str, Any]:
    """The scan ``mlwarden backdoor detect`` runs by default, on ``spec``; cached as JSON.

    Returns the raw per-method sizes and success rates, the clean accuracy, the seconds
    the scan took and the report's findings (id, severity, target) under the current code.
    """
    path = CACHE / "scans" / f"{spec.name}.json"
    classifier = build(spec)
    _, held_out = digits()
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    acc = float((classifier.predict(held_out.x) == held_out.y).float().mean())
    asr = None
    if spec.attack is not None:
        from mlwarden.attacks.poisoning.metrics import attack_success_rate

        asr = attack_success_rate(
            classifier, held_out.x, held_out.y, spec.attack.trigger, spec.attack.target
        )
    report = Report(title=spec.name)
    start = time.perf_counter()
    scans = run_backdoor_scan(classifier, held_out, BackdoorSettings(), report=report, seed=0)
    seconds = time.perf_counter() - start
    out = {
        "name": spec.name,
        "target": spec.target,
        "accuracy": acc,
        "asr": asr,
        "seconds": seconds,
        "scans": [_encode(s) for s in scans],
        "findings": [
            {"id": f.id, "severity": f.severity.value, "target": f.evidence.get("target_class")}
            for f in report.findings
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def badnets(target: int, **kw: Any) -> PoisoningAttack:
    return BadNets(target=target, rate=0.1, **kw)


def blended(target: int, **kw: Any) -> PoisoningAttack:
    return Blended(target=target, rate=0.1, **kw)


CALIBRATION: list[ModelSpec] = [
    ModelSpec("cal-cnn-w16-s100", "cnn", 16, 100),
    ModelSpec("cal-cnn-w16-s101", "cnn", 16, 101),
    ModelSpec("cal-cnn-w16-s102", "cnn", 16, 102),
    ModelSpec("cal-cnn-w16-s103", "cnn", 16, 103),
    ModelSpec("cal-cnn-w8-s104", "cnn", 8, 104),
    ModelSpec("cal-cnn-w8-s105", "cnn", 8, 105),
    ModelSpec("cal-cnn-w32-s106", "cnn", 32, 106),
    ModelSpec("cal-mlp-w64-s107", "mlp", 64, 107),
    ModelSpec("cal-mlp-w64-s108", "mlp", 64, 108),
    ModelSpec("cal-mlp-w128-s109", "mlp", 128, 109),
    ModelSpec("cal-gap-w24-s110", "gap", 24, 110),
    ModelSpec("cal-gap-w16-s111", "gap", 16, 111),
    ModelSpec("demo-teacher", "demo-teacher", 16, 0),
    ModelSpec("demo-student", "demo-student", 16, 1),
]
"""The clean models the cuts are chosen on: 3 architectures, 2-3 widths each, the demo's two."""

EVALUATION: list[ModelSpec] = [
    ModelSpec("eval-cnn-w16-s200", "cnn", 16, 200),
    ModelSpec("eval-cnn-w16-s201", "cnn", 16, 201),
    ModelSpec("eval-cnn-w8-s202", "cnn", 8, 202),
    ModelSpec("eval-cnn-w32-s203", "cnn", 32, 203),
    ModelSpec("eval-mlp-w64-s204", "mlp", 64, 204),
    ModelSpec("eval-mlp-w128-s205", "mlp", 128, 205),
    ModelSpec("eval-gap-w24-s206", "gap", 24, 206),
    ModelSpec("eval-gap-w16-s207", "gap", 16, 207),
    ModelSpec("eval-cnn-w16-s208", "cnn", 16, 208),
    ModelSpec("eval-mlp-w96-s209", "mlp", 96, 209),
    ModelSpec("demo-teacher", "demo-teacher", 16, 0),
    ModelSpec("demo-student", "demo-student", 16, 1),
    ModelSpec("eval-cnn-w16-s210-badnets3-checker-br-t0", "cnn", 16, 210, badnets(0, size=3)),
    ModelSpec(
        "eval-cnn-w16-s211-badnets2-solid-tl-t7",
        "cnn",
        16,
        211,
        badnets(7, size=2, position="top-left", pattern="solid"),
    ),
    ModelSpec(
        "eval-cnn-w32-s212-badnets3-random-center-t3",
        "cnn",
        32,
        212,
        badnets(3, size=3, position="center", pattern="random"),
    ),
    ModelSpec(
        "eval-mlp-w64-s213-badnets2-checker-tr-t9",
        "mlp",
        64,
        213,
        badnets(9, size=2, position="top-right"),
    ),
    ModelSpec(
        "eval-gap-w24-s214-badnets3-solid-bl-t4",
        "gap",
        24,
        214,
        badnets(4, size=3, position="bottom-left", pattern="solid"),
    ),
    ModelSpec(
        "eval-cnn-w16-s215-blend-stripes-a0.15-t5",
        "cnn",
        16,
        215,
        blended(5, alpha=0.15, pattern="stripes"),
    ),
    ModelSpec(
        "eval-mlp-w128-s216-blend-noise-a0.2-t2",
        "mlp",
        128,
        216,
        blended(2, alpha=0.2, pattern="noise"),
    ),
    ModelSpec(
        "eval-gap-w24-s217-blend-checker-a0.2-t8",
        "gap",
        24,
        217,
        blended(8, alpha=0.2, pattern="checkerboard"),
    ),
]
"""Seeded apart from the calibration zoo: 12 clean (with the demo's two), 8 backdoored."""


def scans_of(record: dict[str, Any], *, asr_threshold: float = 0.95) -> list[BackdoorScan]:
    """`BackdoorScan`s rebuilt from a cached record (sizes and success rates are all the
    graded verdict reads; the detectors' default success rate is 0.95)."""
    from mlwarden.defenses.detection.anomaly import anomaly_index

    out = []
    for entry in record["scans"]:
        sizes = torch.tensor(entry["sizes"])
        success = torch.tensor(entry["success"])
        out.append(
            BackdoorScan(
                method=entry["method"],
                classes=list(range(len(sizes))),
                sizes=sizes,
                success=success,
                anomaly_index=anomaly_index(sizes),
                threshold=None,
                elapsed_s=entry["elapsed_s"],
                converged=bool((success >= asr_threshold).all())
                and bool(torch.isfinite(sizes).all()),
            )
        )
    return out
