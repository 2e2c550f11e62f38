"""Serve's runtime choices (torch threads, worker thread) taken from the machine and the model.

Measured on a shared 2-core machine (issue 20): with torch's default intra-op threads the
gateway answered 0.1-0.5x the requests of a bare endpoint while other work ran; with one
torch thread and the model on the event loop it answered 1.4-2.6x. A small model gains
nothing from intra-op parallelism, and threads beyond the cores given to the process
oversubscribe them, so "auto" picks one thread unless the model is large and cores are free.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

LARGE_MODEL_PARAMS = 20_000_000
"""Above this many parameters a forward pass is long enough for intra-op threads to pay off."""


@dataclass(frozen=True)
class RuntimeChoice:
    """What serve runs with, and why (logged at start-up and shown in ``/readyz``)."""

    torch_threads: int
    worker_thread: bool
    cpus: int
    parameters: int
    source: str

    def details(self) -> dict[str, Any]:
        return asdict(self)


def available_cpus() -> int:
    """Cores this process may run on (affinity, as containers and taskset restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parameter_count(model: object) -> int:
    """Parameters of the model's torch module (a `Classifier`'s ``module``, or the model
    itself when it is one, as a text model is); 0 when it has none to count (an oracle)."""
    module = getattr(model, "module", model)
    params = getattr(module, "parameters", None)
    if params is None:
        return 0
    try:
        return int(sum(p.numel() for p in params()))
    except (TypeError, RuntimeError):
        return 0


def choose_runtime(torch_threads: int | str, worker_thread: bool | str, model: object,
                   cpus: int | None = None) -> RuntimeChoice:
    """Resolve ``"auto"`` settings; explicit numbers and booleans are kept as configured."""
    cpus = cpus or available_cpus()
    params = parameter_count(model)
    large = params > LARGE_MODEL_PARAMS and cpus > 2
    threads = (min(cpus // 2, 8) if large else 1) if torch_threads == "auto" else int(torch_threads)
    in_thread = (threads > 1 or large) if worker_thread == "auto" else bool(worker_thread)
    auto = [n for n, v in (("torch_threads", torch_threads), ("worker_thread", worker_thread))
            if v == "auto"]
    source = f"auto ({', '.join(auto)})" if auto else "config"
    return RuntimeChoice(max(threads, 1), in_thread, cpus, params, source)


def apply_runtime(choice: RuntimeChoice) -> None:
    """Set torch's intra-op threads for this process and say what was chosen, once."""
    import torch

    if torch.get_num_threads() != choice.torch_threads:
        torch.set_num_threads(choice.torch_threads)
    log.info("runtime: %d torch thread(s), model %s, %d cpu(s) available, %d parameters [%s]",
             choice.torch_threads, "in a worker thread" if choice.worker_thread
             else "on the event loop", choice.cpus, choice.parameters, choice.source)
