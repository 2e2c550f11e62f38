"""The README's gateway section, run verbatim in a fresh directory, serves its own key a 200."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from mlwarden.io.export import save_pt2

ROOT = Path(__file__).resolve().parents[2]


def gateway_commands() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Serve a model behind a self-defending API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)
    assert len(blocks) == 1, "the gateway section has one command block"
    return blocks[0]



def test_readme_gateway_section_verbatim(tmp_path: Path, digits_cnn, digits_split, free_port,
                                         wait_ready):
    block = gateway_commands()
    setup, _, serve_line = block.rpartition("\n")
    assert serve_line.startswith("mlwarden serve"), serve_line
    # what the user brings: an exported model and training data
    save_pt2(digits_cnn, tmp_path / "model.pt2")
    train, test = digits_split
    np.savez(tmp_path / "train.npz", x=train.x.numpy(), y=train.y.numpy())
    # `mlwarden` on PATH runs this checkout's sources
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "mlwarden"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mlwarden.cli.main "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    work = tmp_path / "work"
    work.mkdir()
    for name in ("model.pt2", "train.npz"):
        (work / name).symlink_to(tmp_path / name)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", setup], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    api_key = done.stdout.strip().splitlines()[0]  # keys create prints the key once
    port = free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {serve_line} --port {port}"], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, timeout=120)
        r = httpx.post(f"{url}/v1/predict", headers={"X-API-Key": api_key},
                       json={"inputs": [test.x[0].tolist()]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == int(digits_cnn.predict(test.x[:1]))
        assert httpx.post(f"{url}/v1/predict", json={"inputs": [test.x[0].tolist()]},
                          timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
