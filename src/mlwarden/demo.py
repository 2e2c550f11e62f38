"""``mlwarden demo``: the whole pipeline on a fresh install, with nothing to download.

A teacher CNN is trained on one half of scikit-learn's digits, a student is
fine-tuned from it on the other half (the transfer-learning setting mlwarden is
about), both are saved as ``.pt2``, and the student is audited through the same
``mlwarden.toml`` + runner a user would use. Trained models are cached in the user
cache folder so a second run takes seconds.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mlwarden.core.findings import Report
from mlwarden.core.progress import ProgressCallback, null_progress

CACHE_VERSION = "v1"

DEMO_TOML = """\
# Written by `mlwarden demo`. Re-run the audit with:
#   mlwarden audit --config {config}
[model]
path = "models/student.pt2"

[data]
source = "data/test.npz"

[audit]
title = "mlwarden demo: student fine-tuned from a digits teacher"
fail_on = "critical"
formats = ["html", "json", "sarif"]
output_dir = "."
seed = 0

[checks.accuracy]
min_accuracy = 0.9

[checks.scan]
paths = ["models"]

[checks.evasion]
preset = "pgd"
norm = "linf"
eps = [0.02, 0.05, 0.1, 0.2, 0.3]
steps = 20
min_robust_accuracy = 0.3

[checks.risk]
answers = "answers.yaml"
"""

# The demo system, as a team would describe it to `mlwarden risk`: a teacher taken from
# a public source, a student fine-tuned on internal data, served behind an API key.
DEMO_ANSWERS = """\
version: 1
system:
  name: mlwarden-demo digit reader
  owner: demo
model:
  source: pretrained-public
  transfer_learning: full-fine-tune
  format: torch-export
data:
  sources: [internal]
  personal: false
  retraining: none
deployment:
  exposure: partner-api
  outputs: scores
  authentication: api-key
  rate_limited: true
impact:
  integrity: high
  confidentiality: medium
  availability: medium
"""


@dataclass
class DemoResult:
    output_dir: Path
    config: Path
    reports: dict[str, Path]
    clean_accuracy: float
    trained: bool
    report: Report


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mlwarden")) / "demo" / f"{CACHE_VERSION}-torch{torch.__version__}"


def _train_models(cache: Path, progress: ProgressCallback) -> None:
    """Train the teacher on one half of the training split, fine-tune the student on the other."""
    from mlwarden.core.classifier import Classifier
    from mlwarden.core.training import fit
    from mlwarden.io.dataset import load_builtin
    from mlwarden.io.export import save_pt2
    from mlwarden.models import SmallCNN

    digits = load_builtin("digits")
    train, _ = digits.split(0.75, seed=0)
    public, private = train.split(0.5, seed=1)
    spec = digits.spec()
    torch.manual_seed(0)
    teacher = SmallCNN()
    fit(teacher, public.x, public.y, epochs=20, lr=2e-3, seed=0, progress=progress, task="teacher")
    student = copy.deepcopy(teacher)
    student.head.reset_parameters()  # a new task head, then a full fine-tune
    fit(
        student, private.x, private.y, epochs=10, lr=1e-3, seed=1, progress=progress, task="student"
    )
    cache.mkdir(parents=True, exist_ok=True)
    save_pt2(Classifier(teacher, spec, name="teacher"), cache / "teacher.pt2")
    save_pt2(Classifier(student, spec, name="student"), cache / "student.pt2")


def run_demo(
    output_dir: str | Path = "mlwarden-demo",
    *,
    retrain: bool = False,
    progress: ProgressCallback = null_progress,
) -> DemoResult:
    """Train (or reuse) the demo models, audit the student, write the reports."""
    import numpy as np

    from mlwarden.io.dataset import load_builtin

    out = Path(output_dir).resolve()
    cache = cache_dir()
    trained = retrain or not all((cache / f"{n}.pt2").is_file() for n in ("teacher", "student"))
    if trained:
        _train_models(cache, progress)
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name in ("teacher", "student"):
        shutil.copyfile(cache / f"{name}.pt2", out / "models" / f"{name}.pt2")
    _, test = load_builtin("digits").split(0.75, seed=0)
    np.savez(out / "data" / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    return audit_demo(out, DEMO_TOML, DEMO_ANSWERS, trained=trained, progress=progress)


def audit_demo(
    out: Path,
    toml_template: str,
    answers: str,
    *,
    trained: bool,
    progress: ProgressCallback,
    **fields: str,
) -> DemoResult:
    """The tail every demo shares: write its answers and config, run the audit a user would.

    ``toml_template`` is formatted with ``config`` (its own path) and ``fields``.
    """
    from mlwarden.audit.runner import run_audit
    from mlwarden.config import load_config

    (out / "answers.yaml").write_text(answers, encoding="utf-8")
    config_path = out / "mlwarden.toml"
    config_path.write_text(toml_template.format(config=config_path, **fields), encoding="utf-8")
    outcome = run_audit(load_config(config_path), progress=progress)
    acc = outcome.report.metrics.get("clean_accuracy")
    return DemoResult(out, config_path, outcome.files, float(acc or 0.0), trained, outcome.report)
