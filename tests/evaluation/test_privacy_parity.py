"""``mlwarden privacy audit`` and the ``privacy`` audit check: one settings model, one runner.

For the same settings both front doors must report the same findings and metrics; the
command's new thresholds, ``--allow`` and ``--device`` must take effect.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlwarden.io.dataset import Dataset

# Tiny budgets: two shadows, two epochs, 40 + 40 records.
ATTACKS = ["threshold", "lira-offline"]
SETTINGS = {"shadow_models": 2, "shadow_epochs": 2, "samples": 40, "max_auc": 0.3}
SEED = 3


@pytest.fixture(scope="module")
def record_files(
    digits_split: tuple[Dataset, Dataset], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """Members (training records of ``digits_cnn``) and non-members (its test records)."""
    train, test = digits_split
    folder = tmp_path_factory.mktemp("privacy")
    paths = []
    for name, data in (("members", train.take(60)), ("non_members", test.take(60))):
        path = folder / f"{name}.npz"
        np.savez(path, x=data.x.numpy(), y=data.y.numpy())
        paths.append(path)
    return paths[0], paths[1]


def privacy_cli(cli, model: Path, files: tuple[Path, Path], *extra: str):  # type: ignore[no-untyped-def]
    members, non_members = files
    return cli(
        "privacy", "audit", "-m", str(model), "--members", str(members),
        "--non-members", str(non_members), "--format", "json", "--no-progress", *extra,
    )


def settings_flags() -> list[str]:
    flags = [f"--attack={a}" for a in ATTACKS]
    for key, value in SETTINGS.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    return [*flags, "--seed", str(SEED)]


def summary(report: dict) -> tuple[list[tuple[str, str]], dict]:  # type: ignore[type-arg]
    return [(f["id"], f["severity"]) for f in report["findings"]], report["metrics"]


def test_cli_and_audit_check_report_the_same(
    cli, digits_cnn_pt2: Path, record_files: tuple[Path, Path], tmp_path: Path
) -> None:
    res = privacy_cli(
        cli, digits_cnn_pt2, record_files, *settings_flags(), "--device", "cpu", "--fail-on",
        "never",
    )
    assert res.code == 0, res.err
    from_cli = json.loads(res.out)

    members, non_members = record_files
    out = tmp_path / "report"
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items())
    config = tmp_path / "mlwarden.toml"
    config.write_text(
        f"[model]\npath = {json.dumps(str(digits_cnn_pt2))}\ndevice = \"cpu\"\n\n"
        f"[data]\nsource = {json.dumps(str(non_members))}\n\n"
        f"[audit]\nseed = {SEED}\nformats = [\"json\"]\noutput_dir = {json.dumps(str(out))}\n"
        f"fail_on = \"never\"\n\n"
        f"[checks.privacy]\nmembers = {json.dumps(str(members))}\n"
        f"attacks = {json.dumps(ATTACKS)}\n{table}\n",
        encoding="utf-8",
    )
    audit = cli("audit", "--config", str(config), "--check", "privacy", "--no-progress")
    assert audit.code == 0, audit.err
    from_audit = json.loads((out / "report.json").read_text(encoding="utf-8"))

    findings, metrics = summary(from_cli)
    assert findings == [("MLW-PRIV-001", "high")]  # max_auc 0.3: a trained model is above it
    assert summary(from_audit) == (findings, metrics)
    assert set(metrics) >= {
        "privacy.threshold.auc", "privacy.lira-offline.auc", "privacy.lira-offline.tpr@1%fpr"
    }
    assert metrics["privacy.members"] == metrics["privacy.non_members"] == 40


def test_cli_thresholds_decide_the_finding_and_exit_code(
    cli, digits_cnn_pt2: Path, record_files: tuple[Path, Path]
) -> None:
    lax = privacy_cli(
        cli, digits_cnn_pt2, record_files, "--attack", "threshold", "--samples", "30",
        "--max-auc", "1", "--max-tpr-at-1-fpr", "1",
    )
    strict = privacy_cli(
        cli, digits_cnn_pt2, record_files, "--attack", "threshold", "--samples", "30",
        "--max-auc", "0.3",
    )
    assert lax.code == 0, lax.err
    assert json.loads(lax.out)["findings"] == []
    assert strict.code == 1
    finding = json.loads(strict.out)["findings"][0]
    assert finding["id"] == "MLW-PRIV-001" and "limit 0.3" in finding["detail"]
    assert json.loads(lax.out)["metrics"] == json.loads(strict.out)["metrics"]


def test_cli_allow_is_the_scanner_allow_list(
    cli, digits_cnn, record_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A checkpoint that pickles a non-allowlisted import loads only with ``--allow``."""
    import argparse

    import torch

    ckpt = tmp_path / "cnn.ckpt"
    torch.save(
        {"state_dict": digits_cnn.module.state_dict(), "hparams": argparse.Namespace(lr=0.1)}, ckpt
    )
    spec = tmp_path / "spec.json"
    spec.write_text(digits_cnn.spec.model_dump_json(), encoding="utf-8")
    args = ("--factory", "mlwarden.models:SmallCNN", "--spec", str(spec),
            "--attack", "threshold", "--samples", "8", "--fail-on", "never")
    refused = privacy_cli(cli, ckpt, record_files, *args)
    assert refused.code == 3 and "argparse.Namespace" in refused.err
    allowed = privacy_cli(cli, ckpt, record_files, *args, "--allow", "argparse.Namespace")
    assert allowed.code == 0, allowed.err
    assert json.loads(allowed.out)["metrics"]["privacy.members"] == 8


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--attack", "guess"], "--attack"),
        (["--max-auc", "2"], "--max-auc"),
        (["--shadow-models", "1"], "--shadow-models"),
        (["--samples", "2"], "--samples"),
    ],
)
def test_cli_bad_settings_name_their_flag(
    cli, digits_cnn_pt2: Path, record_files: tuple[Path, Path], args: list[str], flag: str
) -> None:
    res = privacy_cli(cli, digits_cnn_pt2, record_files, *args)
    assert res.code == 2
    assert flag in res.err and "Traceback" not in res.err


def test_compare_names_the_model_of_every_finding_and_metric(
    cli, digits_cnn_pt2: Path, digits_mlp, record_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from mlwarden.io.export import save_pt2

    other = save_pt2(digits_mlp, tmp_path / "digits_mlp.pt2")
    res = privacy_cli(
        cli, digits_cnn_pt2, record_files, "--compare", str(other), "--attack", "threshold",
        "--samples", "30", "--max-auc", "0.3", "--fail-on", "never",
    )
    assert res.code == 0, res.err
    report = json.loads(res.out)
    names = ("digits_cnn", "digits_mlp")
    assert [(f["id"], f["location"]) for f in report["findings"]] == [
        ("MLW-PRIV-001", name) for name in names
    ]
    for finding, name in zip(report["findings"], names, strict=True):
        assert finding["title"].endswith(f"[{name}]") and finding["evidence"]["model"] == name
    metrics = report["metrics"]
    # Each model's headline under its own keys, never one model's number under the other's.
    assert report["headline"] == [
        "privacy.digits_cnn.threshold.auc", "privacy.digits_cnn.threshold.tpr@1%fpr",
        "privacy.digits_mlp.threshold.auc", "privacy.digits_mlp.threshold.tpr@1%fpr",
    ]
    assert all(k.startswith(("privacy.digits_cnn.", "privacy.digits_mlp.")) for k in metrics)
    assert report["findings"][0]["evidence"]["auc"] == round(
        metrics["privacy.digits_cnn.threshold.auc"], 4
    )
    assert report["findings"][1]["evidence"]["auc"] == round(
        metrics["privacy.digits_mlp.threshold.auc"], 4
    )
    table = next(t for t in report["tables"] if t["id"] == "privacy-comparison")
    assert [row[0] for row in table["rows"]] == list(names)
    assert [row[2] for row in table["rows"]] == [
        metrics["privacy.digits_cnn.threshold.auc"], metrics["privacy.digits_mlp.threshold.auc"]
    ]


def test_compare_with_a_dp_twin_trains_its_shadows_with_dp(
    cli, digits_split: tuple[Dataset, Dataset], record_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A model and its DP-SGD twin: each report item names its model, the twin's LiRA
    shadows are DP-trained (its recipe in the report), the plain model's are not."""
    import torch

    from mlwarden.core.classifier import Classifier
    from mlwarden.core.spec import InputSpec
    from mlwarden.core.training import fit
    from mlwarden.defenses.training.dp import fit_private
    from mlwarden.io.export import save_pt2
    from mlwarden.models import MLP

    members = digits_split[0].take(60)
    spec = InputSpec(shape=(1, 8, 8), class_names=members.class_names)
    paths = []
    for name in ("plain", "dp_twin"):
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Flatten(), MLP(64, 10, (32,)))
        if name == "plain":
            fit(module, members.x, members.y, epochs=5, lr=3e-3, seed=0)
        else:
            fit_private(module, members.x, members.y, target_epsilon=2.0, epochs=5, lr=3e-3,
                        seed=0)
        paths.append(save_pt2(Classifier(module, spec), tmp_path / f"{name}.pt2"))
    res = privacy_cli(
        cli, paths[0], record_files, "--compare", str(paths[1]), "--compare-dp-epsilon", "2",
        "--attack", "threshold", "--attack", "lira-offline", "--shadow-models", "2",
        "--shadow-epochs", "2", "--samples", "30", "--max-auc", "0.3", "--fail-on", "never",
    )
    assert res.code == 0, res.err
    report = json.loads(res.out)
    names = ("plain", "dp_twin")
    assert [f["location"] for f in report["findings"]] == list(names)
    assert all(f["title"].endswith(f"[{f['location']}]") for f in report["findings"])
    metrics = report["metrics"]
    assert all(k.startswith(("privacy.plain.", "privacy.dp_twin.")) for k in metrics)
    assert all(k.startswith(("privacy.plain.", "privacy.dp_twin.")) for k in report["headline"])
    assert metrics["privacy.plain.shadow.dp"] == 0.0
    assert metrics["privacy.dp_twin.shadow.dp"] == 1.0
    recipes = {t["id"]: dict(t["rows"]) for t in report["tables"]
               if t["id"].startswith("lira-shadow-recipe")}
    assert recipes["lira-shadow-recipe"]["training"] == "SGD"
    assert recipes["lira-shadow-recipe-compare"]["training"] == "DP-SGD"
    assert recipes["lira-shadow-recipe-compare"]["dp_epsilon"] == 2.0
