"""Settings that cannot work are refused before Ray starts, with a message naming the flag."""

from __future__ import annotations

import pytest

from mlwarden.audit.registry import check_spec
from mlwarden.cli.flags import settings_from_flags
from mlwarden.core.errors import ParameterError
from mlwarden.defenses.federated.defences import STRATEGIES, client_dp_epsilon
from mlwarden.defenses.federated.settings import FederatedSettings


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"strategies": ["krum"], "clients": 10, "malicious": 0.4}, "n >= 2f + 3"),
        ({"strategies": ["bulyan"], "clients": 10, "malicious": 0.2}, "n >= 4f + 3"),
        ({"strategies": ["fedavg,multikrum"], "clients": 6, "malicious": 0.5}, "n >= 2f + 3"),
        ({"partition": "dirichlet:0"}, "alpha must be > 0"),
        ({"strategies": ["fedsgd"]}, "unknown strategy 'fedsgd'"),
        ({"malicious": 1.0}, "in [0, 1)"),
        ({"malicious": -0.1}, "in [0, 1)"),
        ({"malicious": 0.01}, "rounds to none"),
        ({"attack": "evil"}, "unknown attack"),
        ({"model": "resnet"}, "unknown model"),
        ({"trim_beta": 0.5}, "--trim-beta"),
    ],
)
def test_invalid_settings_are_refused(flags, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("+", r"\+")):
        settings_from_flags(FederatedSettings, flags, names={"strategies": "--strategy"})


def test_tolerated_settings_pass_and_compare_expands():
    s = FederatedSettings(strategies=["compare"], clients=20, malicious=0.2)
    assert s.strategies == list(STRATEGIES) and s.num_malicious == 4
    assert s.effective_boost == 5.0  # gamma = n / m (Bagdasaryan et al.)
    assert FederatedSettings(strategies=["bulyan"], clients=7, malicious=1 / 7).num_malicious == 1


def test_the_audit_check_shares_the_settings():
    spec = check_spec("federated")
    cfg = spec.config.model_validate({"strategies": ["fedavg", "krum"], "malicious": 0.2})
    assert cfg.strategies == ["fedavg", "krum"] and cfg.clients == 20
    with pytest.raises(ValueError, match="n >= 2f"):
        spec.config.model_validate({"strategies": ["krum"], "clients": 5, "malicious": 0.4})


def test_epsilon_falls_with_noise_and_grows_with_rounds():
    eps = client_dp_epsilon(1.0, 20, 1.0, 1e-5)
    assert client_dp_epsilon(2.0, 20, 1.0, 1e-5) < eps < client_dp_epsilon(1.0, 40, 1.0, 1e-5)
    assert client_dp_epsilon(1.0, 20, 0.1, 1e-5) < eps  # client sampling amplifies


def test_cli_refuses_before_any_round(cli):
    result = cli("federated", "simulate", "--strategy", "krum", "--clients", "10",
                 "--malicious", "0.4", "--no-progress")
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "krum tolerates" in result.err and "--malicious" in result.err
    result = cli("federated", "simulate", "--partition", "dirichlet:0", "--no-progress")
    assert result.code == 2 and "alpha must be > 0" in result.err
