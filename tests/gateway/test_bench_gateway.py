"""benchmarks/bench_gateway.py measures serve's own defaults with every protection on, and runs.

The config and wrk tests are fast; the smoke run (slow, skipped without wrk) runs the whole
script with --quick (3-second wrk runs) and checks it prints a complete table. No timing
is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlwarden.gateway.config import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gateway.py"
NEEDS_WRK = pytest.mark.skipif(shutil.which("wrk") is None,
                               reason="wrk is not installed (apt-get install -y wrk)")


def bench() -> ModuleType:
    """The benchmark script as a module (registered, as its dataclass needs)."""
    if "bench_gateway" in sys.modules:
        return sys.modules["bench_gateway"]
    spec = importlib.util.spec_from_file_location("bench_gateway", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gateway"] = module
    spec.loader.exec_module(module)
    return module


def test_config_sets_no_runtime_settings_and_turns_every_protection_on(tmp_path: Path):
    toml = bench().tensor_toml(8123)
    assert "batching" not in toml and "threads" not in toml and "worker" not in toml
    (tmp_path / "mlwarden.toml").write_text(toml)
    model, gw = load_serve_config(tmp_path / "mlwarden.toml")
    assert model.path == tmp_path / "model.pt2" and model.factory is None
    assert gw.batching.torch_threads == "auto" and gw.batching.worker_thread == "auto"
    assert gw.port == 8123
    assert gw.auth.enabled and gw.auth.key_file == tmp_path / "mlwarden-keys.json"
    assert gw.rate_limit.enabled
    assert gw.validation.validator == tmp_path / "validator.safetensors"
    assert gw.validation.ood == "flag" and gw.validation.bounds == "reject"
    assert gw.hardening.default_output == "rounded"
    mon = gw.monitoring
    for name in ("extraction", "query_attack", "failed_auth"):
        detector = getattr(mon, name)
        assert detector.enabled and detector.action == "block", name
    assert gw.audit_log.enabled and gw.audit_log.require_key
    assert gw.audit_log.key_file == tmp_path / "audit-keys.json"


def test_parse_wrk_counts_refusals_and_socket_errors():
    out = """Running 1s test @ http://127.0.0.1:1/v1/predict
  2 threads and 4 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.05s
  1200 requests in 1.00s, 300.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1199.50
Transfer/sec:    299.00KB
"""
    r = bench().parse_wrk(out)
    assert r == {"rps": 1199.5, "p50": pytest.approx(0.812), "p99": 1050.0,
                 "requests": 1200.0, "non2xx": 7.0, "socket_errors": 5.0}


@pytest.mark.slow
@NEEDS_WRK
def test_quick_run_prints_a_table_with_no_refusals():
    # one thread for the preparation steps; the script starts the servers without the caps
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--hog-cores", "0", "--bare", "1"], env=env,
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| no hog |")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "mlwarden serve (all on)", "bare FastAPI (1 torch thread)",
        "**gateway / bare FastAPI (1 torch thread)**"]
    for row in rows[:2]:
        assert row.rstrip(" |").endswith("| 0"), row  # non-2xx
    assert '"source": "auto (torch_threads, worker_thread)"' in done.stdout
    assert "authenticated chain intact" in done.stdout


class _Answer(BaseHTTPRequestHandler):
    """A loopback server answering every POST with ``status`` after ``delay`` seconds."""

    status, delay = 429, 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        body = b'{"error": {"code": "rate_limited"}}'
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def loopback(tmp_path: Path, status: int, delay: float) -> Iterator[Any]:
    """The benchmark's wrk files in ``tmp_path`` and a `Server` for such a loopback server."""
    mod = bench()
    (tmp_path / "post.lua").write_text(mod.WRK_LUA)
    (tmp_path / "bodies.jsonl").write_text('{"inputs": [[[0.5]]]}\n')
    handler = type("Handler", (_Answer,), {"status": status, "delay": delay})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield mod.Server("refuser", None, f"http://127.0.0.1:{httpd.server_port}", "k", {},
                         tmp_path / "refuser.log")
    finally:
        httpd.shutdown()
        httpd.server_close()


@NEEDS_WRK
def test_a_server_that_refuses_makes_the_run_invalid(tmp_path: Path):
    """wrk against a real loopback server answering 429: the benchmark stops and says so."""
    with loopback(tmp_path, 429, 0.0) as server, pytest.raises(SystemExit) as stopped:
        bench().run_wrk(server, argparse.Namespace(threads=1), tmp_path, 1, 2)
    message = str(stopped.value)
    assert message.startswith("INVALID BENCHMARK: refuser answered "), message
    assert "answered 0 non-2xx" not in message
    assert '429 {"error": {"code": "rate_limited"}}' in message  # what one request got


@NEEDS_WRK
def test_a_run_with_no_completed_request_is_invalid(tmp_path: Path):
    """A server that answers after the run has ended gives wrk nothing to measure."""
    with loopback(tmp_path, 200, 3.0) as server, pytest.raises(SystemExit) as stopped:
        bench().run_wrk(server, argparse.Namespace(threads=1), tmp_path, 1, 2)
    assert "INVALID BENCHMARK: no request to refuser completed in 1 s" in str(stopped.value)
