"""The one progress callback that long loops report through.

Library code calls ``progress(task, completed, total)``; it is silent by default.
The CLI passes an adapter that draws Rich progress bars (`mlwarden.cli.ui`).
"""

from __future__ import annotations

from typing import Protocol


class ProgressCallback(Protocol):
    def __call__(self, task: str, completed: int, total: int | None) -> None:
        """Report that ``completed`` of ``total`` units of ``task`` are done."""


def null_progress(task: str, completed: int, total: int | None) -> None:
    """The default: report nothing."""
