"""``mlwarden gateway fit-validator`` and ``mlwarden serve`` end to end, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mlwarden.cli.main import app
from mlwarden.gateway.audit_log import verify_chain
from mlwarden.gateway.auth import add_key
from mlwarden.io.export import save_weights


def test_fit_validator_then_serve_then_graceful_shutdown(tmp_path: Path, digits_cnn, free_port,
                                                         wait_ready,
                                                         digits_split):
    weights = save_weights(digits_cnn, tmp_path / "cnn.safetensors")
    runner = CliRunner()
    res = runner.invoke(app, ["gateway", "fit-validator", "--model", str(weights),
                              "--factory", "mlwarden.models:SmallCNN", "--data", "digits",
                              "--out", str(tmp_path / "validator.safetensors"), "--frr", "0.02"])
    assert res.exit_code == 0, res.output
    assert "query-attack k-NN threshold" in res.output
    key = add_key(tmp_path / "keys.json", "e2e")
    port = free_port()
    (tmp_path / "mlwarden.toml").write_text(
        f'[model]\npath = "cnn.safetensors"\nfactory = "mlwarden.models:SmallCNN"\n\n'
        f'[gateway]\nport = {port}\n'
        '[gateway.auth]\nkey_file = "keys.json"\n'
        '[gateway.validation]\nvalidator = "validator.safetensors"\nood = "flag"\n'
        '[gateway.audit_log]\npath = "audit.jsonl"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mlwarden.cli.main", "serve", "--config",
                             str(tmp_path / "mlwarden.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, timeout=90)
        noise = [[[0.5] * 8] * 8]
        r = httpx.post(f"{url}/v1/predict", headers={"X-API-Key": key.api_key},
                       json={"inputs": [digits_split[1].x[0].tolist(), noise]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == int(digits_cnn.predict(digits_split[1].x[:1]))
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal for the default exit status
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    check = verify_chain(tmp_path / "audit.jsonl")
    assert check.ok and check.entries == 3  # start, predict, stop (graceful)
    assert '"event":"stop"' in (tmp_path / "audit.jsonl").read_text().splitlines()[-1]


def test_serve_with_a_bad_config_exits_2_in_one_line(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\npath = "m.pt2"\n[gateway.rate_limit]\nper_key = "often"\n')
    proc = subprocess.run([sys.executable, "-m", "mlwarden.cli.main", "serve", "--config",
                           str(cfg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "gateway.rate_limit.per_key" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--method", "knn"], ["--frr", "0.9"]])
def test_fit_validator_bad_options(tmp_path: Path, digits_cnn, args):
    weights = save_weights(digits_cnn, tmp_path / "cnn.safetensors")
    res = CliRunner().invoke(app, ["gateway", "fit-validator", "--model", str(weights),
                                   "--factory", "mlwarden.models:SmallCNN", "--data", "digits",
                                   "--out", str(tmp_path / "v.safetensors"), *args])
    assert res.exit_code != 0


def test_fit_validator_refuses_a_black_box_model_before_reading_data(tmp_path: Path, digits_cnn):
    from mlwarden.core.errors import ParameterError
    from mlwarden.io.export import export_onnx

    pytest.importorskip("onnxruntime")
    onnx_file = export_onnx(digits_cnn, tmp_path / "cnn.onnx")
    res = CliRunner().invoke(app, ["gateway", "fit-validator", "--model", str(onnx_file),
                                   "--data", str(tmp_path / "never-read.npz"),
                                   "--out", str(tmp_path / "v.safetensors")])
    assert isinstance(res.exception, ParameterError)
    message = str(res.exception)
    assert "an OOD validator needs hidden features" in message and "score oracle" in message
    assert not (tmp_path / "v.safetensors").exists()
