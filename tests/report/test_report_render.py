"""The format registry, JSON round trip and `write_report`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlwarden.core.errors import InputError, ParameterError
from mlwarden.core.findings import Finding, Report
from mlwarden.report import FORMATS, format_for_path, render, write_report
from mlwarden.report.reader import read_report


def test_json_round_trip_is_exact(sample_report: Report) -> None:
    text = render(sample_report, "json")
    again = Report.from_json(text)
    assert again == sample_report
    assert render(again, "json") == text


def test_json_tolerates_numpy_evidence_that_pydantic_cannot_serialise() -> None:
    report = Report(
        findings=[
            Finding(
                id="X-1",
                title="t",
                severity="low",
                evidence={"norm": np.float32(1.5), "mask": np.arange(3), "bad": float("nan")},
            )
        ]
    )
    data = json.loads(render(report, "json"))
    evidence = data["findings"][0]["evidence"]
    assert evidence["norm"] == 1.5 and evidence["mask"] == [0, 1, 2]
    # every text format survives the same report
    for fmt in FORMATS:
        assert render(report, fmt)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("r.json", "json"),
        ("r.sarif", "sarif"),
        ("r.SARIF.json", "sarif"),
        ("r.xml", "junit"),
        ("r.md", "md"),
        ("r.html", "html"),
        ("r.htm", "html"),
        ("r.txt", "text"),
        ("r.pdf", None),
    ],
)
def test_format_from_suffix(name: str, fmt: str | None) -> None:
    assert format_for_path(name) == fmt


def test_write_report_picks_format_from_suffix_and_creates_folders(sample_report, tmp_path) -> None:
    for name in ("a/r.json", "b/r.sarif", "c/r.xml", "d/r.md"):
        path = write_report(sample_report, tmp_path / name)
        assert path.read_text(encoding="utf-8") == render(sample_report, format_for_path(name))
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["a", "b", "c", "d", "r.json", "r.sarif", "r.xml", "r.md"]
    ), "no temporary files are left behind"
    # explicit format wins over the suffix
    path = write_report(sample_report, tmp_path / "x.txt", fmt="json")
    assert Report.from_json(path.read_text(encoding="utf-8")) == sample_report


def test_write_report_unknown_suffix_names_the_file(sample_report, tmp_path) -> None:
    with pytest.raises(ParameterError, match="report.pdf"):
        write_report(sample_report, tmp_path / "report.pdf")
    assert not list(tmp_path.iterdir())


def test_unknown_format_lists_the_choices(sample_report) -> None:
    with pytest.raises(ParameterError, match="json, sarif, junit, md, html"):
        render(sample_report, "pdf")
    assert render(sample_report, "Markdown") == render(sample_report, "md")
    with pytest.raises(ParameterError, match="Report"):
        render({"findings": []}, "json")  # type: ignore[arg-type]


def test_read_report_errors_name_file_and_problem(tmp_path, sample_report) -> None:
    good = sample_report.save_json(tmp_path / "good.json")
    assert read_report(good) == sample_report
    cases = {
        "trunc.json": (render(sample_report, "json")[:200], "not valid JSON"),
        "list.json": ("[1, 2]", "JSON list, not an object"),
        "sev.json": (
            json.dumps({"findings": [{"id": "A", "title": "t", "severity": "urgent"}]}),
            "findings.0.severity",
        ),
        "extra.json": (json.dumps({"bogus": 1}), "bogus"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match=message) as info:
            read_report(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="not UTF-8"):
        read_report(tmp_path / "bin.json")
    with pytest.raises(InputError, match="does not exist"):
        read_report(tmp_path / "missing.json")
