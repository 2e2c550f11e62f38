"""The one progress callback that long loops report through.

Library code calls ``progress(task, completed, total)``; it is silent by default.
The CLI passes an adapter that draws Rich progress bars on a terminal and, when its
output is not a terminal, `LogProgress`: periodic lines on stderr with an estimate
(`mlwarden.cli.ui.progress_bars`).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO


class ProgressCallback(Protocol):
    def __call__(self, task: str, completed: int, total: int | None) -> None:
        """Report that ``completed`` of ``total`` units of ``task`` are done."""


def null_progress(task: str, completed: int, total: int | None) -> None:
    """The default: report nothing."""


class LogProgress:
    """Progress as periodic log lines, for output that is not a terminal (CI logs, pipes).

    A task that has run ``quiet_s`` seconds gets a line, then one every ``interval_s``
    seconds or every ``step`` of the total (whichever comes first, at most one a second),
    and one when it completes; tasks shorter than ``quiet_s`` (one attack batch of a
    long evaluation) stay silent, so the log shows the work that takes time::

        [mlwarden] pgd: 120/450 (27%) elapsed 0:00:41, eta 0:01:52

    The estimate extrapolates the task's own rate so far; a task of unknown total
    reports its count only.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = 10.0,
        step: float = 0.1,
        quiet_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self.step = step
        self.quiet_s = quiet_s
        self.clock = clock
        # task -> (start, time of the last line or None, fraction at the last line)
        self._tasks: dict[str, tuple[float, float | None, float]] = {}

    def __call__(self, task: str, completed: int, total: int | None) -> None:
        now = self.clock()
        frac = completed / total if total else 0.0
        if task in self._tasks and self._tasks[task][2] >= 1.0 and completed < (total or 0):
            del self._tasks[task]  # the same task name started again (a new attack): restart
        if task not in self._tasks:
            self._tasks[task] = (now, None, -1.0)
        start, last_t, last_frac = self._tasks[task]
        done = total is not None and completed >= total
        if now - start < self.quiet_s or (done and last_frac >= 1.0):
            if done:
                self._tasks[task] = (start, last_t, 1.0)  # finished quietly, or already said
            return
        due = (
            last_t is None
            or done
            or now - last_t >= self.interval_s
            or (bool(total) and frac - last_frac >= self.step and now - last_t >= 1.0)
        )
        if due:
            self._tasks[task] = (start, now, 1.0 if done else frac)
            self._emit(task, completed, total, start, now)

    def _emit(self, task: str, completed: int, total: int | None, start: float, now: float) -> None:
        elapsed = now - start
        line = f"[mlwarden] {task}: {completed}"
        if total:
            line += f"/{total} ({min(completed / total, 1.0):.0%})"
        line += f" elapsed {_clock(elapsed)}"
        if total and 0 < completed < total and elapsed > 0:
            line += f", eta {_clock(elapsed * (total - completed) / completed)}"
        stream = self.stream if self.stream is not None else sys.stderr
        print(line, file=stream, flush=True)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))
