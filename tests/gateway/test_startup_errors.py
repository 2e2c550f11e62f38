"""Configuration mistakes stop the gateway at start-up with the fix that applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.core.errors import ConfigError
from mlwarden.gateway.app import create_app
from mlwarden.gateway.auth import add_key, revoke_key


def test_missing_key_file_names_the_create_command(tmp_path: Path, digits_cnn, gateway_config):
    missing = tmp_path / "mlwarden-keys.json"
    with pytest.raises(ConfigError, match="does not exist.*mlwarden keys create --file"):
        create_app(digits_cnn, gateway_config(auth={"keys": [], "key_file": str(missing)}))


def test_key_file_with_only_revoked_keys_is_refused(tmp_path: Path, digits_cnn, gateway_config):
    path = tmp_path / "k.json"
    add_key(path, "old")
    revoke_key(path, "old")
    with pytest.raises(ConfigError, match="holds no active API key"):
        create_app(digits_cnn, gateway_config(auth={"keys": [], "key_file": str(path)}))


def test_no_keys_at_all_points_to_key_file_or_disabling(digits_cnn, gateway_config):
    with pytest.raises(ConfigError, match=r"key_file = \"mlwarden-keys.json\".*enabled = false"):
        create_app(digits_cnn, gateway_config(auth={"keys": []}))


def test_auth_off_needs_no_key(digits_cnn, gateway_config):
    create_app(digits_cnn, gateway_config(auth={"enabled": False, "keys": []}))


def test_missing_query_attack_threshold_points_to_the_validator_setting(digits_cnn,
                                                                        gateway_config):
    config = gateway_config()
    config.monitoring.query_attack.threshold = None
    with pytest.raises(ConfigError, match=r"validator = \"validator.safetensors\""):
        create_app(digits_cnn, config, validator=None)
