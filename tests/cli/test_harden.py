"""``mlwarden harden``: a hardened copy in the format the model came in, a report with the
before/after table and plot, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mlwarden.io import load_model, save_weights

TINY = ["--epochs", "1", "--steps", "2", "--samples", "40", "--preset", "pgd", "--no-progress"]

PLAIN_EXPORT = textwrap.dedent(
    """
    import sys, torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(256, 10),
    )
    program = torch.export.export(
        net.eval(), (torch.rand(4, 1, 8, 8),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    torch.export.save(program, sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory):
    """A torch.export file written by a script that imports nothing of mlwarden."""
    path = tmp_path_factory.mktemp("plain") / "plain.pt2"
    subprocess.run([sys.executable, "-c", PLAIN_EXPORT, str(path)], check=True, timeout=120)
    return path


def test_a_plain_torch_export_file_is_hardened_into_a_pt2(cli, plain_pt2, tmp_path):
    out, report = tmp_path / "hard.pt2", tmp_path / "report.json"
    before = plain_pt2.read_bytes()
    result = cli("harden", "--model", str(plain_pt2), "--data", "digits", "--out", str(out),
                 "-o", str(report), *TINY)
    assert result.code == 0, result.err
    assert plain_pt2.read_bytes() == before
    hardened = load_model(out, device="cpu")
    assert hardened.spec.shape == (1, 8, 8) and hardened.num_classes == 10
    data = json.loads(report.read_text())
    assert data["subject"]["hardened"] == str(out)
    assert {"harden.before.robust_accuracy", "harden.after.robust_accuracy",
            "harden.after.clean_accuracy", "harden.train_seconds"} <= set(data["metrics"])
    table = next(t for t in data["tables"] if t["id"] == "harden-before-after")
    assert [row[0] for row in table["rows"]] == ["before", "after (pgd)"]
    assert any(f["id"] == "harden-before-after" and f["kind"] == "bar" for f in data["figures"])
    assert any(f["id"] == "MLW-HARD-004" for f in data["findings"])
    # a plain export says nothing of its bounds: the report says they were assumed
    assert any(f["id"] == "MLW-SPEC-001" for f in data["findings"])


def test_weights_with_a_factory_give_safetensors_beside_the_model(cli, digits_cnn, tmp_path):
    weights = save_weights(digits_cnn.module, tmp_path / "cnn.safetensors", spec=digits_cnn.spec)
    result = cli("harden", "--model", str(weights), "--factory", "mlwarden.models:SmallCNN",
                 "--data", "digits", "--method", "trades", "--format", "json", *TINY)
    assert result.code == 0, result.err
    out = tmp_path / "cnn-trades.safetensors"
    hardened = load_model(out, factory="mlwarden.models:SmallCNN", device="cpu")
    assert hardened.num_classes == 10
    assert json.loads(result.out)["metrics"]["harden.method"] == "trades"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "-0.1"], "--eps: Input should be greater than 0"),
        (["--method", "free"], "--method: must be one of pgd, trades, fast, gaussian"),
        (["--out", "x.onnx"], "must end in .pt2"),
        (["--on-overfit", "ignore"], "--on-overfit"),
    ],
)
def test_bad_flags_give_one_line(cli, plain_pt2, args, message):
    result = cli("harden", "--model", str(plain_pt2), "--data", "digits", *args, *TINY)
    assert result.code == 2
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert message in lines[0]


def test_nan_data_is_refused(cli, plain_pt2, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype("float32")
    x[5, 0, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 10)
    result = cli("harden", "--model", str(plain_pt2), "--data", str(tmp_path / "nan.npz"), *TINY)
    assert result.code == 2 and "Traceback" not in result.err
    assert "NaN" in result.err


def test_gaussian_hardening_certifies_before_and_after(cli, plain_pt2, tmp_path):
    """The method made for randomized smoothing gets the certified columns by default, and
    noise training raises the smoothed model's certified accuracy."""
    out, report = tmp_path / "noise.pt2", tmp_path / "report.json"
    result = cli("harden", "--model", str(plain_pt2), "--data", "digits", "--method", "gaussian",
                 "--epochs", "8", "--samples", "40", "--preset", "fast", "--certify-n", "500",
                 "--out", str(out), "-o", str(report), "--no-progress")
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    table = next(t for t in data["tables"] if t["id"] == "harden-before-after")
    assert any(c.startswith("certified accuracy (L2 0.25, sigma 0.25)") for c in table["columns"])
    m = data["metrics"]
    assert m["harden.after.certified_accuracy"] > m["harden.before.certified_accuracy"] + 0.2
    figure = next(f for f in data["figures"] if f["id"] == "harden-before-after")
    assert figure["categories"][-1] == "certified, L2 0.25"
    # other methods certify only when asked
    plain = tmp_path / "plain.json"
    result = cli("harden", "--model", str(plain_pt2), "--data", "digits", "-o", str(plain), *TINY)
    assert result.code == 0, result.err
    assert "harden.after.certified_accuracy" not in json.loads(plain.read_text())["metrics"]
