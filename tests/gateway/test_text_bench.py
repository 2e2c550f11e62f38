"""benchmarks/bench_gateway_text.py: its config sets nothing about threads or batching and
turns every protection on; its scripts import nothing of mlwarden. No timing is asserted
(the run itself takes minutes: see docs/gateway.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from mlwarden.gateway.config import load_serve_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gateway_text.py"


def bench() -> ModuleType:
    """The benchmark script as a module (it imports `bench_gateway` from beside itself)."""
    if "bench_gateway_text" in sys.modules:
        return sys.modules["bench_gateway_text"]
    spec = importlib.util.spec_from_file_location("bench_gateway_text", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gateway_text"] = module
    spec.loader.exec_module(module)
    return module


def test_text_config_sets_no_runtime_settings_and_turns_every_protection_on(
    tmp_path: Path,
) -> None:
    toml = bench().text_toml(8124)
    assert "batching" not in toml and "threads" not in toml and "worker" not in toml
    (tmp_path / "mlwarden.toml").write_text(toml)
    model, gw = load_serve_config(tmp_path / "mlwarden.toml")
    assert model.path == tmp_path / "student"
    assert gw.batching.torch_threads == "auto" and gw.batching.worker_thread == "auto"
    assert gw.auth.enabled and gw.rate_limit.enabled
    assert gw.validation.validator == tmp_path / "validator.safetensors"
    assert gw.text.over_long == "refuse" and gw.text.max_chars == 5000
    assert gw.hardening.default_output == "rounded"
    for name in ("extraction", "query_attack", "failed_auth"):
        detector = getattr(gw.monitoring, name)
        assert detector.enabled and detector.action == "block", name
    assert gw.audit_log.enabled and gw.audit_log.require_key
    assert not gw.audit_log.include_inputs


def test_the_user_s_scripts_import_nothing_of_mlwarden() -> None:
    module = bench()
    for script in (module.STUDENT_SCRIPT, module.BARE_SCRIPT):
        assert "mlwarden" not in script
        compile(script, "<bench script>", "exec")
