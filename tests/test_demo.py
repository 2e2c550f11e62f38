"""`mlwarden demo` on a fresh install: trains, exports, audits, writes the reports."""

from __future__ import annotations

import json

import pytest

from mlwarden.cli.main import run


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh user cache
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exc:
        run(["demo", "--output", str(out), "--no-progress"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed.replace("\n", "")
    # the terminal ends with the one verdict, and exit 0 follows it
    last = printed.strip().splitlines()[-1]
    assert (
        last.startswith("verdict: PASSED — all ") and "checks passed at --fail-on critical" in last
    )
    report = json.loads((out / "report.json").read_text())
    metrics = report["metrics"]
    assert metrics["clean_accuracy"] > 0.9
    pgd = {k: v for k, v in metrics.items() if k.startswith("evasion.pgd.linf.robust_accuracy@")}
    assert len(pgd) == 5
    by_eps = [pgd[k] for k in sorted(pgd, key=lambda k: float(k.split("@")[1]))]
    assert by_eps == sorted(by_eps, reverse=True) and by_eps[-1] < by_eps[0]
    assert report["fail_on"] == "critical"
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["scan"] == "passed" and statuses["accuracy"] == "passed"
    assert "risk" in statuses
    assert (out / "report.sarif").is_file() and (out / "models" / "student.pt2").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script src=" not in html
    # The second run reuses the cached models.
    with pytest.raises(SystemExit) as again:
        run(["demo", "--output", str(out), "--no-progress"])
    assert again.value.code == 0
    assert "loaded from cache" in capsys.readouterr().out
