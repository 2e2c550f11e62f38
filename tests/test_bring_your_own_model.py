"""A user's own model, trained and exported without mlwarden, works with every command.

The model is trained by a script that imports only torch, numpy and scikit-learn and
saves it with plain ``torch.export``: no mlwarden spec inside. Each command that takes a
model runs on it without ``--spec`` (bounds assumed: the report says so, MLW-SPEC-001)
and with a partial spec that gives only the bounds (nothing assumed, no finding).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlwarden.core.contract import SPEC_ASSUMED_ID
from mlwarden.io import load_model

pytestmark = pytest.mark.slow

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    train_x, train_y, test_x, test_y = x[:1200], y[:1200], x[1200:], y[1200:]
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for i in range(0, len(train_x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(train_x[i:i + 64]), train_y[i:i + 64]).backward()
            opt.step()
    model.eval()
    program = torch.export.export(
        model, (test_x[:4],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, str(out / "model.pt2"))
    np.savez(out / "train.npz", x=train_x.numpy(), y=train_y.numpy())
    np.savez(out / "test.npz", x=test_x.numpy(), y=test_y.numpy())
    assert not [name for name in sys.modules if name.startswith("mlwarden")]
    print(float((model(test_x).argmax(1) == test_y).float().mean()))
    """
)

BOUNDS_ONLY = {"bounds": [0.0, 1.0]}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.pt2, train.npz and test.npz as the user's own script writes them."""
    root = tmp_path_factory.mktemp("byom")
    script = root / "train.py"
    script.write_text(TRAIN_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) > 0.85  # really trained
    spec = root / "spec.json"
    spec.write_text(json.dumps(BOUNDS_ONLY), encoding="utf-8")
    return {
        "model": root / "model.pt2",
        "train": root / "train.npz",
        "test": root / "test.npz",
        "spec": spec,
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, so no stray ./mlwarden.toml applies its [spec]."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _commands(files: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """Each command with tiny budgets, and a metric its JSON report must hold."""
    model, train, test = str(files["model"]), str(files["train"]), str(files["test"])
    quiet = ["--no-progress", "--fail-on", "never", "-f", "json", "-o", "report.json"]
    return {
        "attack evasion": (
            ["attack", "evasion", "-m", model, "-d", test, "--attack", "fgsm",
             "--eps", "0.1", "--samples", "24", *quiet],
            "evasion.fgsm.linf.robust_accuracy@0.1",
        ),
        "evaluate robustness": (
            ["evaluate", "robustness", "-m", model, "-d", test, "--preset", "pgd",
             "--eps", "0.1", "--steps", "2", "--samples", "24", *quiet],
            "evasion.pgd.linf.robust_accuracy@0.1",
        ),
        "backdoor detect": (
            ["backdoor", "detect", "-m", model, "-d", test, "--method",
             "universal_perturbation", "--steps", "5", "--samples", "24", *quiet],
            "backdoor.anomaly_index",
        ),
        "transfer": (
            ["transfer", "-t", model, "-d", test, "--strategy", "linear_probe",
             "--epochs", "1", "--scan-steps", "2", *quiet],
            "transfer.student_accuracy",
        ),
        "privacy audit": (
            ["privacy", "audit", "-m", model, "--members", train, "--non-members", test,
             "--attack", "threshold", "--samples", "40", *quiet],
            "privacy.threshold.auc",
        ),
        "attack extraction": (
            ["attack", "extraction", "-m", model, "-d", test, "--budget", "100",
             "--epochs", "2", "--strategy", "random", *quiet],
            "extraction.random.scores.agreement",
        ),
    }


COMMANDS = list(_commands({k: Path(k) for k in ("model", "train", "test")}))


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _spec_finding(report: dict[str, Any]) -> dict[str, Any] | None:
    found = [f for f in report["findings"] if f["id"] == SPEC_ASSUMED_ID]
    assert len(found) <= 1  # stated once, however many parts use the model
    return found[0] if found else None


def _assert_bounds_assumed(report: dict[str, Any]) -> None:
    finding = _spec_finding(report)
    assert finding is not None and finding["severity"] == "info"
    assert finding["evidence"]["bounds"] == [0.0, 1.0]
    assert finding["evidence"]["shape"] == [1, 8, 8]
    assert finding["evidence"]["num_classes"] == 10
    assert "bounds [0, 1] assumed" in finding["detail"]


@pytest.mark.parametrize("with_spec", [False, True], ids=["plain", "spec"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_runs_on_a_plain_export(
    cli: Any, user_files: dict[str, Path], workdir: Path, command: str, with_spec: bool
) -> None:
    args, metric = _commands(user_files)[command]
    if with_spec:
        args = [*args, "--spec", str(user_files["spec"])]
    result = cli(*args)
    assert result.code == 0, result.err + result.out
    report = _report(workdir / "report.json")
    upper = math.inf if metric == "backdoor.anomaly_index" else 1.0  # others are fractions
    assert 0.0 <= float(report["metrics"][metric]) <= upper
    if with_spec:
        assert _spec_finding(report) is None
    else:
        _assert_bounds_assumed(report)


def test_spec_table_in_the_current_folder_applies(
    cli: Any, user_files: dict[str, Path], workdir: Path
) -> None:
    (workdir / "mlwarden.toml").write_text("[spec]\nbounds = [0.0, 1.0]\n", encoding="utf-8")
    args, metric = _commands(user_files)["evaluate robustness"]
    result = cli(*args)
    assert result.code == 0, result.err + result.out
    report = _report(workdir / "report.json")
    assert metric in report["metrics"] and _spec_finding(report) is None


@pytest.mark.parametrize("with_spec", [False, True], ids=["plain", "spec"])
def test_audit_states_the_assumed_bounds(
    cli: Any, user_files: dict[str, Path], workdir: Path, with_spec: bool
) -> None:
    args = ["audit", "-m", str(user_files["model"]), "-d", str(user_files["test"]),
            "--limit", "24", "--check", "accuracy", "--check", "evasion",
            "-o", "out", "--format", "json", "--fail-on", "never", "--no-progress"]
    if with_spec:
        args += ["--spec", str(user_files["spec"])]
    result = cli(*args)
    assert result.code == 0, result.err + result.out
    report = _report(workdir / "out" / "report.json")
    assert float(report["metrics"]["clean_accuracy"]) > 0.7
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "accuracy": "passed",
        "evasion": "passed",
    }
    if with_spec:
        assert _spec_finding(report) is None
    else:
        _assert_bounds_assumed(report)


@pytest.mark.parametrize("spec_from", ["none", "flag", "table"])
def test_serve_predicts_with_a_plain_export(
    cli: Any,
    user_files: dict[str, Path],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec_from: str,
) -> None:
    from fastapi.testclient import TestClient

    import mlwarden.gateway.server as server

    apps: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda app, *_a, **_k: apps.append(app))
    table = "[spec]\nbounds = [0.0, 1.0]\n\n" if spec_from == "table" else ""
    (workdir / "serve.toml").write_text(
        f'[model]\npath = "{user_files["model"].as_posix()}"\n\n{table}'
        "[gateway.auth]\nenabled = false\n\n[gateway.audit_log]\nenabled = false\n\n"
        "[gateway.monitoring.query_attack]\nenabled = false\n",
        encoding="utf-8",
    )
    flag = ["--spec", str(user_files["spec"])] if spec_from == "flag" else []
    result = cli("serve", "--config", "serve.toml", *flag)
    assert result.code == 0 and len(apps) == 1, result.err + result.out
    x = np.load(user_files["test"])["x"][:3]
    expected = load_model(user_files["model"], device="cpu").predict(torch.from_numpy(x))
    with TestClient(apps[0]) as client:
        response = client.post("/v1/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == expected.tolist()
    assert [p["class_name"] for p in response.json()["predictions"]] == [str(i) for i in labels]
