"""Bad input ends with exit 2 (or 3 for an unsafe file) and one clear line, never a traceback."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mlwarden.io import save_pt2, save_weights


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, digits_cnn, digits_split):
    root = tmp_path_factory.mktemp("models")
    save_pt2(digits_cnn, root / "model.pt2")
    save_weights(digits_cnn.module, root / "model.safetensors", spec=digits_cnn.spec)
    _, test = digits_split
    np.savez(root / "test.npz", x=test.x[:40].numpy(), y=test.y[:40].numpy())
    return root


def one_error_line(result) -> str:
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error:")
    return lines[0]


def test_audit_of_a_good_model_works(cli, model_files, tmp_path):
    result = cli(
        "audit", "--model", str(model_files / "model.pt2"), "--data", str(model_files / "test.npz"),
        "--check", "accuracy", "--output-dir", str(tmp_path), "--format", "json", "--no-progress",
    )
    assert result.code == 0, result.err
    assert (tmp_path / "report.json").is_file()


def test_truncated_model_file(cli, model_files, tmp_path):
    data = (model_files / "model.pt2").read_bytes()
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(data[: len(data) // 2])
    result = cli("audit", "--model", str(broken), "--data", str(model_files / "test.npz"),
                 "--check", "accuracy", "--output-dir", str(tmp_path), "--no-progress")
    assert result.code in (2, 3)
    assert "broken.pt2" in one_error_line(result)


def test_corrupt_weights_file(cli, model_files, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    result = cli("audit", "--model", str(corrupt), "--factory", "mlwarden.models:SmallCNN",
                 "--data", str(model_files / "test.npz"), "--output-dir", str(tmp_path),
                 "--no-progress")
    assert result.code in (2, 3)
    assert "corrupt.safetensors" in one_error_line(result)


def test_factory_that_does_not_exist(cli, model_files, tmp_path):
    result = cli("audit", "--model", str(model_files / "model.safetensors"),
                 "--factory", "no_such_package.models:Net", "--data", str(model_files / "test.npz"),
                 "--output-dir", str(tmp_path), "--no-progress")
    assert result.code == 2
    assert "no_such_package" in one_error_line(result)


def test_data_of_the_wrong_shape(cli, model_files, tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((5, 3, 8, 8), np.float32), y=np.zeros(5, np.int64))
    result = cli("audit", "--model", str(model_files / "model.pt2"), "--data", str(wrong),
                 "--output-dir", str(tmp_path), "--no-progress")
    assert result.code == 2
    assert "shape" in one_error_line(result)


def test_nan_in_data(cli, model_files, tmp_path):
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    x[2, 0, 1, 1] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=x, y=np.zeros(5, np.int64))
    result = cli("audit", "--model", str(model_files / "model.pt2"), "--data", str(bad),
                 "--output-dir", str(tmp_path), "--no-progress")
    assert result.code == 2
    assert "NaN" in one_error_line(result)


def test_malicious_pickle_is_refused_with_exit_3(cli, model_files, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"weights": Payload()}))
    result = cli("audit", "--model", str(evil), "--factory", "mlwarden.models:SmallCNN",
                 "--data", str(model_files / "test.npz"), "--output-dir", str(tmp_path),
                 "--no-progress")
    assert result.code == 3
    assert "evil.pt" in one_error_line(result)


def test_unknown_config_key(cli, tmp_path):
    cfg = tmp_path / "mlwarden.toml"
    cfg.write_text('[model]\npath = "m.pt2"\nweights = "x"\n', encoding="utf-8")
    result = cli("audit", "--config", str(cfg))
    assert result.code == 2
    assert "model.weights: unknown key" in one_error_line(result)


def test_bad_fail_on_value(cli, model_files, tmp_path):
    result = cli("audit", "--model", str(model_files / "model.pt2"), "--fail-on", "sometimes")
    assert result.code == 2
    assert "--fail-on" in one_error_line(result)


def test_imports_reviewed_in_the_scan_check_are_accepted_by_the_audit(cli, model_files, tmp_path):
    import argparse

    import torch

    from mlwarden.io import load_model

    model = load_model(model_files / "model.pt2")
    ckpt = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": model.module.state_dict(), "hparams": argparse.Namespace(lr=0.1)},
               ckpt)
    spec = tmp_path / "spec.json"
    spec.write_text(model.spec.model_dump_json(), encoding="utf-8")
    cfg = tmp_path / "mlwarden.toml"
    base = (f'[model]\npath = "{ckpt}"\nfactory = "mlwarden.models:SmallCNN"\n'
            f'[data]\nsource = "{model_files / "test.npz"}"\n'
            f'[audit]\noutput_dir = "{tmp_path}"\nformats = ["json"]\n'
            "[checks.accuracy]\n")
    cfg.write_text(base + "[checks.scan]\n", encoding="utf-8")
    refused = cli("audit", "--config", str(cfg), "--spec", str(spec), "--no-progress")
    assert refused.code == 3 and "argparse.Namespace" in refused.err
    cfg.write_text(base + '[checks.scan]\nallow = ["argparse.Namespace"]\n', encoding="utf-8")
    accepted = cli("audit", "--config", str(cfg), "--spec", str(spec), "--no-progress")
    assert accepted.code == 0, accepted.err
