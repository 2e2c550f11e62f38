"""Device choice: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlwarden.core.errors import InputError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a `torch.device`, refusing CUDA where there is none."""
    import torch

    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{name}' requested but CUDA is not available here")
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return dev
    raise InputError(f"unknown device '{name}' (use cpu, cuda, cuda:N or auto)")
