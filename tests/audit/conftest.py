"""One local Ray cluster per test session (Ray takes tens of seconds to start on a busy
machine), shut down at the end; workers inherit the test-only crash hook's folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A two-CPU Ray cluster on loopback; yields the folder of the crash-once hook."""
    ray = pytest.importorskip("ray")
    from mlwarden.audit.distributed import CRASH_ONCE_ENV

    crash_dir = tmp_path_factory.mktemp("ray-crash")
    patch = pytest.MonkeyPatch()
    patch.setenv(CRASH_ONCE_ENV, str(crash_dir))  # before init: the workers inherit it
    for attempt in range(3):  # a raylet can miss Ray's fixed 30 s start-up window when busy
        try:
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                _node_ip_address="127.0.0.1",
            )
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        yield crash_dir
    finally:
        ray.shutdown()
        patch.undo()
