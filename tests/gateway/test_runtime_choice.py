"""Serve picks torch threads and the worker-thread mode from the machine and the model."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from mlwarden.core.errors import ConfigError
from mlwarden.gateway.app import create_app
from mlwarden.gateway.config import GatewayConfig
from mlwarden.gateway.tuning import choose_runtime


class _Big:
    module = torch.nn.Linear(5000, 5000)  # 25M parameters


def test_small_model_gets_one_thread_on_the_loop(digits_cnn):
    choice = choose_runtime("auto", "auto", digits_cnn, cpus=16)
    assert (choice.torch_threads, choice.worker_thread) == (1, False)
    assert choice.parameters == sum(p.numel() for p in digits_cnn.module.parameters())


def test_large_model_on_many_cores_gets_threads_and_a_worker():
    choice = choose_runtime("auto", "auto", _Big(), cpus=16)
    assert (choice.torch_threads, choice.worker_thread) == (8, True)
    busy = choose_runtime("auto", "auto", _Big(), cpus=2)
    assert (busy.torch_threads, busy.worker_thread) == (1, False)


def test_config_overrides_auto(digits_cnn):
    choice = choose_runtime(3, True, digits_cnn, cpus=2)
    assert (choice.torch_threads, choice.worker_thread, choice.source) == (3, True, "config")
    with pytest.raises(ConfigError, match="torch_threads"):
        GatewayConfig.from_dict({"batching": {"torch_threads": 0}})


def test_readyz_states_the_choice(digits_cnn, gateway_config):
    before = torch.get_num_threads()
    try:
        with TestClient(create_app(digits_cnn, gateway_config())) as client:
            runtime = client.get("/readyz").json()["details"]["runtime"]
        assert runtime["torch_threads"] == 1 and runtime["worker_thread"] is False
        assert runtime["source"] == "auto (torch_threads, worker_thread)"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
