"""Markdown: complete, ordered, and safe to paste into a pull request."""

from __future__ import annotations

from mlwarden.core.findings import Artefact, Finding, Report, Table
from mlwarden.report import render
from mlwarden.report.markdown import GITHUB_COMMENT_LIMIT, to_markdown


def test_sections_metrics_and_checks(sample_report: Report) -> None:
    md = render(sample_report, "md")
    for heading in (
        "# Audit of digits-cnn (teacher)",
        "## Metrics",
        "## Checks",
        "## Findings",
        "## Tables",
        "## Figures",
        "## Artefacts",
    ):
        assert heading + "\n" in md
    assert "**Verdict:** FAILED — 3 of 6 checks failed at --fail-on high" in md
    assert "| Clean accuracy | 97.3% |" in md
    assert "| Gradient evaluations | 45,000 |" in md
    assert "| Extraction agreement | — |" in md
    assert "| Model | models/teacher.pt2 |" in md
    # checks with problems first
    assert (
        md.index("| extraction | ⚠️ error")
        < md.index("| evasion | ❌ failed")
        < md.index("| accuracy | ✅ passed")
    )


def test_findings_grouped_worst_first_with_threat_ids(sample_report) -> None:
    md = render(sample_report, "md")
    order = [md.index(f"### {s} (") for s in ("Critical", "High", "Medium", "Low", "Info")]
    assert order == sorted(order)
    sup = md.index("`MLW-SUP-001`")
    assert order[0] < sup < order[1]
    assert "ATLAS:AML.T0010, ATLAS:AML.T0011, OWASP:ML06" in md
    assert '"global": "posix.system"' in md  # evidence in a collapsible block
    assert "**Location:** models/teacher.pt::archive/data.pkl" in md


def test_tables_and_figure_captions(sample_report) -> None:
    md = render(sample_report, "md")
    assert "| class | samples | clean accuracy | robust accuracy (PGD) |" in md
    assert md.count("\n| 7 | 45 |") == 1
    assert "### Figure: Robust accuracy vs. perturbation budget" in md
    assert "*Accuracy on 450 test digits as the attack budget grows.*" in md
    # small curves are given as numbers, image figures point to the HTML report
    assert "| 0.1 | 0.41 | 0.12 |" in md
    assert "9 image(s)" in md
    assert "[artefacts/pgd\\_eps0.1.npz](artefacts/pgd_eps0.1.npz)" in md


def test_hostile_strings_are_escaped() -> None:
    report = Report(
        title="<script>alert(1)</script>",
        findings=[
            Finding(
                id="X`1",
                title="<img src=x onerror=alert(1)>",
                severity="high",
                detail="# not a heading\n1. not a list",
                evidence={"s": "```"},
            )
        ],
        tables=[Table(id="t", title="t", columns=["a|b"], rows=[["x|y\nz"]])],
        artefacts=[Artefact(name="a", path="javascript:alert(1)")],
    )
    md = render(report, "md")
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;" in md
    assert "\\# not a heading" in md and "1\\. not a list" in md
    assert "| a\\|b |" in md and "| x\\|y z |" in md
    assert "](javascript:" not in md
    assert "````json" in md, "the fence is longer than any backtick run in the evidence"


def test_empty_report() -> None:
    md = render(Report(), "md")
    assert (
        "No findings." in md and "**Verdict:** PASSED — no finding at or above --fail-on high" in md
    )


def test_fits_a_github_comment_by_dropping_evidence_then_mild_findings() -> None:
    sev = ["info", "low", "medium", "high", "critical"]
    report = Report(
        metrics={"clean_accuracy": 0.97},
        findings=[
            Finding(
                id=f"F-{i:04d}",
                title=f"finding number {i}",
                severity=sev[i % 5],
                detail="x" * 200,
                evidence={"values": list(range(50))},
            )
            for i in range(600)
        ],
    )
    full = to_markdown(report)
    assert len(full) > GITHUB_COMMENT_LIMIT
    short = to_markdown(report, max_chars=GITHUB_COMMENT_LIMIT)
    assert len(short) <= GITHUB_COMMENT_LIMIT
    assert "| Clean accuracy | 97.0% |" in short
    assert "Evidence" not in short
    # every critical finding survives; the mildest ones are counted instead
    assert all(f"`F-{i:04d}`" in short for i in range(4, 600, 5))
    assert "more info finding(s) in the full report" in short
    assert to_markdown(report, max_chars=10**9) == full
    tiny = to_markdown(report, max_chars=500)
    assert len(tiny) <= 500 and tiny.endswith("see the full report)\n")
