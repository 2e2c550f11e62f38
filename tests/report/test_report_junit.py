"""JUnit XML: one test case per check, correct counts, parseable by CI readers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from mlwarden.core.findings import CheckResult, Finding, Report
from mlwarden.report import render


def _suite(report: Report) -> ET.Element:
    root = ET.fromstring(render(report, "junit").encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def test_counts_and_one_case_per_check(sample_report: Report) -> None:
    suite = _suite(sample_report)
    cases = suite.findall("testcase")
    # the sample's "gateway" finding has no check result: it gets a case of its own, last
    assert [c.get("name") for c in cases] == [c.name for c in sample_report.checks] + ["gateway"]
    assert all(c.get("classname") == f"mlwarden.{c.get('name')}" for c in cases)
    assert suite.get("tests") == "7"
    # the orphan "gateway" finding is below the default fail_on (high): its case passes
    assert suite.get("failures") == "3"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "1"
    assert float(suite.get("time")) == pytest.approx(
        sum(c.duration_s for c in sample_report.checks), abs=1e-3
    )
    assert suite.get("timestamp") == "2026-11-22T20:30:00"
    status = {
        c.get("name"): [child.tag for child in c if child.tag in ("failure", "error", "skipped")]
        for c in cases
    }
    assert status == {
        "accuracy": [],
        "evasion": ["failure"],
        "backdoor": ["failure"],
        "supplychain": ["failure"],
        "extraction": ["error"],
        "membership": ["skipped"],
        "gateway": [],
    }
    # judged at low, the orphan fails as well: JUnit follows the report's fail_on
    low = ET.fromstring(render(sample_report.model_copy(update={"fail_on": "low"}), "junit"))
    gateway = [c for c in low.iter("testcase") if c.get("name") == "gateway"][0]
    assert gateway.find("failure") is not None


def test_failures_carry_their_findings_worst_first(sample_report) -> None:
    suite = _suite(sample_report)
    evasion = next(c for c in suite.findall("testcase") if c.get("name") == "evasion")
    failure = evasion.find("failure")
    assert failure.get("message") == "PGD robust accuracy 12.0% < required 40.0%"
    body = failure.text
    assert body.index("MLW-EVA-002") < body.index("MLW-EVA-001"), "high before medium"
    assert "ATLAS:AML.T0043" in body
    error = next(c for c in suite.findall("testcase") if c.get("name") == "extraction").find(
        "error"
    )
    assert "HTTP 500" in error.get("message")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["subject.model"] == "models/teacher.pt2"
    assert props["metric.clean_accuracy"] == "0.9733"


def test_findings_without_a_check_result_get_their_own_case() -> None:
    report = Report(
        checks=[CheckResult(name="accuracy", status="passed", duration_s=0.5)],
        findings=[
            Finding(
                id="MLW-SUP-001",
                title="Pickle imports os.system",
                severity="critical",
                check="scan",
                location="m.pkl",
            ),
            Finding(id="MLW-SUP-009", title="Unpinned hash", severity="info", check="pins"),
        ],
    )
    suite = _suite(report)
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"accuracy", "scan", "pins"}
    assert cases["scan"].find("failure") is not None
    assert "m.pkl" in cases["scan"].find("failure").text
    assert cases["pins"].find("failure") is None, "info alone does not fail a build"
    assert suite.get("tests") == "3" and suite.get("failures") == "1"


def test_hostile_text_still_parses() -> None:
    nasty = 'bad \x00\x1b[2J <tag> & "quotes" ]]> \ud800 end'
    report = Report(
        title=nasty,
        subject={"model": nasty},
        checks=[CheckResult(name="evil", status="failed", summary=nasty)],
        findings=[Finding(id="E-1", title=nasty, severity="high", check="evil", detail=nasty)],
    )
    suite = _suite(report)
    failure = suite.find("testcase").find("failure")
    assert '<tag> & "quotes" ]]>' in failure.get("message")
    assert "\x00" not in failure.text and "\x1b" not in failure.text


def test_empty_report_is_a_valid_empty_suite() -> None:
    suite = _suite(Report())
    assert suite.get("tests") == "0" and suite.findall("testcase") == []


@pytest.mark.peers
def test_junitparser_reads_the_counts(sample_report, tmp_path) -> None:
    junitparser = pytest.importorskip("junitparser")
    path = tmp_path / "r.xml"
    path.write_text(render(sample_report, "junit"), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (7, 4, 1, 1)
    results = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert results["evasion"] == ["Failure"] and results["extraction"] == ["Error"]
    assert results["membership"] == ["Skipped"] and results["accuracy"] == []
