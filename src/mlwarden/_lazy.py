"""Lazy re-exports for package ``__init__`` modules.

Packages re-export their public names but import the modules behind them on first
use, so that ``import mlwarden.io`` (from the CLI, say) does not pay for torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that imports ``names[name]`` when ``name`` is asked for."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
