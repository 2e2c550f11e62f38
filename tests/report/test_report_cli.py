"""``mlwarden report render``: re-render saved reports; one clear line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlwarden.cli.main import run
from mlwarden.core.findings import Report
from mlwarden.report import render


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        run(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def saved(sample_report: Report, tmp_path: Path) -> Path:
    return sample_report.save_json(tmp_path / "report.json")


@pytest.mark.parametrize(
    ("suffix", "fmt"), [(".html", "html"), (".sarif", "sarif"), (".xml", "junit"), (".md", "md")]
)
def test_render_to_file_takes_the_format_from_the_suffix(
    saved, sample_report, tmp_path, capsys, suffix, fmt
) -> None:
    out_path = tmp_path / "out" / f"r{suffix}"
    code, _, err = _run(["report", "render", str(saved), "-o", str(out_path)], capsys)
    # the sample records no fail_on: judged at the default (high), its critical finding fails
    assert code == 1
    text = out_path.read_text(encoding="utf-8")
    assert text == render(sample_report, fmt)
    assert "FAILED" in text
    assert f"wrote {out_path}" in " ".join(err.split())


def test_render_to_stdout_and_fail_on(saved, sample_report, capsys) -> None:
    code, out, _ = _run(["report", "render", str(saved), "--format", "sarif"], capsys)
    sarif = json.loads(out)
    assert code == 1 and sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["invocations"][0]["exitCode"] == 1
    code, out, _ = _run(["report", "render", str(saved), "-f", "text", "--fail-on", "high"], capsys)
    assert code == 1, "a critical finding is at or above high"
    assert "MLW-SUP-001" in out
    code, out, _ = _run(
        ["report", "render", str(saved), "-f", "json", "--fail-on", "never"], capsys
    )
    assert code == 0 and json.loads(out)["fail_on"] == "never"
    code, out, _ = _run(
        ["report", "render", str(saved), "-f", "text", "--fail-on", "never"], capsys
    )
    assert code == 0 and "NOT ENFORCED" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"title": "x", "findings": [', "is not valid JSON"),
        ('{"findings": [{"id": "A", "title": "t", "severity": "urgent"}]}', "findings.0.severity"),
        ("[]", "not an object"),
    ],
)
def test_bad_report_file_exits_2_with_one_line(tmp_path, capsys, content, message) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    code, out, err = _run(["report", "render", str(bad), "-o", str(tmp_path / "x.html")], capsys)
    assert code == 2
    assert message in err and "bad.json" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()


def test_usage_errors_exit_2(saved, tmp_path, capsys) -> None:
    code, _, err = _run(["report", "render", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(["report", "render", str(saved), "-o", str(tmp_path / "r.pdf")], capsys)
    assert code == 2 and "r.pdf" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["report", "render", str(saved), "--fail-on", "hgh"], capsys)
    assert code == 2 and "--fail-on" in err


def test_real_entry_point_without_traceback(tmp_path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlwarden.cli.main import run; run()",
            "report",
            "render",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "broken.json" in proc.stderr


def test_emit_report_writes_the_format_the_file_name_asks_for(sample_report, tmp_path) -> None:
    from mlwarden.cli.common import emit_report
    from mlwarden.core.verdict import with_fail_on

    assert emit_report(sample_report, "text", tmp_path / "r.html", fail_on="critical") == 1
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert emit_report(sample_report, "text", tmp_path / "r.out", fail_on="never") == 0
    never = with_fail_on(sample_report, "never")
    assert (tmp_path / "r.out").read_text(encoding="utf-8") == render(never, "md")
    # an explicit format is kept whatever the suffix
    emit_report(sample_report, "json", tmp_path / "r.html", fail_on="never")
    assert Report.from_json((tmp_path / "r.html").read_text(encoding="utf-8")) == never


def test_max_chars_fits_markdown_and_is_refused_for_other_formats(saved, tmp_path, capsys) -> None:
    out_path = tmp_path / "comment.md"
    code, _, _ = _run(
        [
            "report",
            "render",
            str(saved),
            "-o",
            str(out_path),
            "--max-chars",
            "2500",
            "--fail-on",
            "never",
        ],
        capsys,
    )
    text = out_path.read_text(encoding="utf-8")
    assert code == 0 and len(text) <= 2500 and "MLW-SUP-001" in text
    assert "Evidence" not in text
    code, _, err = _run(
        ["report", "render", str(saved), "-f", "html", "--max-chars", "2500"], capsys
    )
    assert code == 2 and "--max-chars applies to Markdown only" in err
