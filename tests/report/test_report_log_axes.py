"""Figures marked log_x / log_y are drawn on log axes (ROC curves at low FPR)."""

from __future__ import annotations

from mlwarden.core.findings import Figure, Series
from mlwarden.report.plots import _line


def test_log_axes_are_honoured():
    series = [Series(label="attack", x=[1e-4, 1e-2, 1.0], y=[1e-3, 0.1, 1.0])]
    log = _line(Figure(id="roc", title="ROC", kind="line", series=series, log_x=True, log_y=True))
    lin = _line(Figure(id="roc", title="ROC", kind="line", series=series))
    assert (log.axes[0].get_xscale(), log.axes[0].get_yscale()) == ("log", "log")
    assert (lin.axes[0].get_xscale(), lin.axes[0].get_yscale()) == ("linear", "linear")


def test_headline_metrics_become_the_first_cards():
    from mlwarden.core.findings import Report
    from mlwarden.report.html import html_context

    report = Report(
        metrics={f"noise.{i}": i for i in range(20)} | {"clean_accuracy": 0.9},
        headline=["clean_accuracy"],
    )
    cards = html_context(report)["cards"]
    assert "clean accuracy" in cards[0][0].lower()
