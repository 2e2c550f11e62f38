"""`GatewayConfig` and the serve config reader: typos and bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.core.errors import ConfigError
from mlwarden.gateway.config import GatewayConfig, load_serve_config


def test_defaults_turn_every_protection_on() -> None:
    cfg = GatewayConfig()
    assert cfg.auth.enabled and cfg.rate_limit.enabled and cfg.audit_log.enabled
    assert cfg.monitoring.extraction.enabled and cfg.monitoring.query_attack.enabled
    assert cfg.rate_limit.storage == "memory://"


@pytest.mark.parametrize(("data", "needle"), [
    ({"rate_limt": {}}, "gateway.rate_limt: unknown key"),
    ({"rate_limit": {"per_key": "lots"}}, "gateway.rate_limit.per_key: 'lots' is not a rate"),
    ({"rate_limit": {"storage": "mongodb://x"}}, "gateway.rate_limit.storage"),
    ({"validation": {"ood": "explode"}}, "gateway.validation.ood"),
    ({"hardening": {"default_output": "everything"}}, "gateway.hardening.default_output"),
    ({"auth": {"keys": [{"prefix": "ab", "hash": "x"}]}}, "gateway.auth.keys.0.prefix"),
    ({"monitoring": {"extraction": {"delta": 2}}}, "gateway.monitoring.extraction.delta"),
])
def test_errors_name_the_key(data, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        GatewayConfig.from_dict(data)
    assert needle in str(err.value)


def test_serve_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "mlwarden.toml"
    cfg.write_text(
        '[model]\npath = "model.pt2"\n\n[gateway.auth]\nkey_file = "keys.json"\n'
        '[gateway.rate_limit]\nper_key = "100/minute"\nstorage = "redis://127.0.0.1:6379"\n'
        '[gateway.validation]\nvalidator = "v.safetensors"\n'
        '[gateway.audit_log]\npath = "logs/audit.jsonl"\n'
    )
    model, gw = load_serve_config(cfg)
    assert model.path == tmp_path / "model.pt2"
    assert gw.auth.key_file == tmp_path / "keys.json"
    assert gw.validation.validator == tmp_path / "v.safetensors"
    assert gw.audit_log.path == tmp_path / "logs/audit.jsonl"
    assert gw.rate_limit.per_key == "100/minute"


@pytest.mark.parametrize(("text", "needle"), [
    ("[gateway]\n", "no [model] section"),
    ("[model\n", "not valid TOML"),
    ('[model]\npath = "m.pt2"\nweights = 1\n', "model.weights: unknown key"),
])
def test_serve_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_serve_config(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_serve_config(tmp_path / "missing.toml")


def test_serve_reads_the_same_file_as_the_audit(tmp_path: Path) -> None:
    """One mlwarden.toml: [spec] and [audit] are valid next to [model] and [gateway], the
    [spec] table is the one serve hands to the loader, and typos elsewhere are errors too."""
    from mlwarden.config import resolve_spec

    cfg = tmp_path / "mlwarden.toml"
    cfg.write_text(
        '[model]\npath = "model.pt2"\ndevice = "cpu"\n\n'
        '[spec]\nshape = [1, 8, 8]\nbounds = [0.0, 16.0]\n'
        'class_names = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]\n\n'
        '[audit]\nfail_on = "medium"\n\n[gateway]\nport = 9000\n'
    )
    model, gw = load_serve_config(cfg)
    assert model.path == tmp_path / "model.pt2" and model.device == "cpu" and gw.port == 9000
    spec = resolve_spec(None, cfg)
    assert spec is not None and spec.bounds == (0.0, 16.0) and spec.shape == (1, 8, 8)
    cfg.write_text('[model]\npath = "model.pt2"\n[spce]\nshape = [2]\n')
    with pytest.raises(ConfigError, match="spce: unknown key"):
        load_serve_config(cfg)
