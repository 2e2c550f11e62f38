"""`LogProgress`: the non-terminal progress lines (every ~interval or step, with an ETA)."""

from __future__ import annotations

import io

from mlwarden.core.progress import LogProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_step_or_interval_with_an_estimate() -> None:
    out, clock = io.StringIO(), FakeClock()
    log = LogProgress(out, interval_s=10.0, step=0.1, quiet_s=0.0, clock=clock)
    log("pgd", 0, 100)
    for done in range(1, 101):
        clock.now += 1.0  # one unit per second: 100 s in all
        log("pgd", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[mlwarden] pgd: 0/100 (0%) elapsed 0:00:00"
    # every 10% (here also every 10 s), then the completion once
    assert len(lines) == 11
    assert lines[5] == "[mlwarden] pgd: 50/100 (50%) elapsed 0:00:50, eta 0:00:50"
    assert lines[-1] == "[mlwarden] pgd: 100/100 (100%) elapsed 0:01:40"
    log("pgd", 100, 100)  # a repeated completion is not printed again
    assert len(out.getvalue().splitlines()) == 11


def test_slow_task_reports_by_time_and_unknown_total_by_count() -> None:
    out, clock = io.StringIO(), FakeClock()
    log = LogProgress(out, interval_s=10.0, step=0.5, quiet_s=0.0, clock=clock)
    log("sanity", 0, 1000)
    clock.now = 4.0
    log("sanity", 10, 1000)  # 1% after 4 s: too soon, too little
    clock.now = 12.0
    log("sanity", 30, 1000)  # 12 s since the last line
    log("scan", 3, None)
    lines = out.getvalue().splitlines()
    assert lines == [
        "[mlwarden] sanity: 0/1000 (0%) elapsed 0:00:00",
        "[mlwarden] sanity: 30/1000 (3%) elapsed 0:00:12, eta 0:06:28",
        "[mlwarden] scan: 3 elapsed 0:00:00",
    ]


def test_a_task_started_again_gets_a_fresh_clock() -> None:
    out, clock = io.StringIO(), FakeClock()
    log = LogProgress(out, interval_s=10.0, step=0.5, quiet_s=0.0, clock=clock)
    log("pgd", 10, 10)
    clock.now = 100.0
    log("pgd", 0, 10)  # a second attack under the same name
    assert out.getvalue().splitlines()[-1] == "[mlwarden] pgd: 0/10 (0%) elapsed 0:00:00"


def test_short_tasks_stay_silent_long_ones_start_after_the_quiet_time() -> None:
    out, clock = io.StringIO(), FakeClock()
    log = LogProgress(out, interval_s=10.0, step=0.1, quiet_s=2.0, clock=clock)
    for done in range(21):  # one attack batch: 20 steps in 0.2 s
        log("pgd", done, 20)
        clock.now += 0.01
    assert out.getvalue() == ""
    log("budgets", 0, 4)
    clock.now += 3.0
    log("budgets", 1, 4)
    assert out.getvalue().splitlines() == [
        "[mlwarden] budgets: 1/4 (25%) elapsed 0:00:03, eta 0:00:09"
    ]
