"""The pytest plugin driven through ``pytester``: a real audit of a real .pt2 model."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

PLUGIN = "mlwarden.testing.plugin"


def _plugin_args() -> list[str]:
    """``-p`` only while the pytest11 entry point is not installed: registering the same
    module a second time under another name is an error in pluggy."""
    from importlib.metadata import entry_points

    if any(ep.value == PLUGIN for ep in entry_points(group="pytest11")):
        return []
    return ["-p", PLUGIN]


def _toml(
    model: Path,
    data: Path,
    out: Path,
    *,
    scan_paths: list[Path] | None = None,
    fail_on: str = "high",
) -> str:
    scan = ""
    if scan_paths is not None:
        scan = "paths = [" + ", ".join(f'"{p.as_posix()}"' for p in scan_paths) + "]\n"
    return f"""
[model]
path = "{model.as_posix()}"
device = "cpu"

[data]
source = "{data.as_posix()}"

[audit]
fail_on = "{fail_on}"
formats = ["json", "junit"]
output_dir = "{out.as_posix()}"

[checks.accuracy]
min_accuracy = 0.5

[checks.scan]
{scan}
[checks.evasion]
eps = [0.3]
steps = 5
samples = 24
min_robust_accuracy = 0.5

[checks.backdoor]
enabled = false
"""


@pytest.fixture()
def audit_toml(pytester: pytest.Pytester, audit_files: tuple[Path, Path]) -> Path:
    model, data = audit_files
    out = pytester.path / "report"
    return pytester.makefile(".toml", mlwarden=_toml(model, data, out))


def test_checks_become_items_that_pass_fail_and_skip(
    pytester: pytest.Pytester, audit_toml: Path
) -> None:
    result = pytester.runpytest(*_plugin_args(), "--mlwarden-config", str(audit_toml), "-v", "-rA")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*mlwarden: auditing*mlwarden.toml*",
            "*mlwarden::accuracy PASSED*",
            "*mlwarden::evasion FAILED*",
            "*mlwarden::backdoor SKIPPED*",
        ]
    )
    result.stdout.fnmatch_lines(["*mlwarden::scan PASSED*"])
    # the failure tells measured vs required, and where the report is
    result.stdout.fnmatch_lines(
        [
            "*check 'evasion': 1 finding(s) at or above 'high' (required: none)*",
            "*[[]high[]] MLW-EVA-*",
            "*report:*report.json*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    report = json.loads((pytester.path / "report" / "report.json").read_text())
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {"scan": "passed", "accuracy": "passed", "evasion": "failed"}
    assert (pytester.path / "report" / "report.xml").is_file()


def test_fail_on_option_overrides_the_config(pytester: pytest.Pytester, audit_toml: Path) -> None:
    result = pytester.runpytest(
        *_plugin_args(), "--mlwarden-config", str(audit_toml), "--mlwarden-fail-on", "critical"
    )
    result.assert_outcomes(passed=3, skipped=1)


class _Exploit:
    def __reduce__(self):  # noqa: ANN204 - builds a malicious pickle, never loaded
        import os

        return (os.system, ("echo pwned",))


def test_a_malicious_file_fails_the_scan_item(
    pytester: pytest.Pytester, audit_files: tuple[Path, Path]
) -> None:
    model, data = audit_files
    evil = pytester.path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Exploit()))
    toml = pytester.makefile(
        ".toml",
        mlwarden=_toml(
            model, data, pytester.path / "out", scan_paths=[model, evil], fail_on="critical"
        ),
    )
    result = pytester.runpytest(
        *_plugin_args(), "--mlwarden-config", str(toml), "-v", "-k", "scan or accuracy"
    )
    result.assert_outcomes(passed=1, failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*mlwarden::scan FAILED*", "*[[]critical[]] MLW-SCAN-*"])
    # only the selected checks ran: -k must not pay for the evasion check
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert sorted(c["name"] for c in report["checks"]) == ["accuracy", "scan"]


def test_fixtures_and_ini_option(pytester: pytest.Pytester, audit_toml: Path) -> None:
    pytester.makeini(f"[pytest]\nmlwarden_config = {audit_toml.name}\n")
    pytester.makepyfile(
        test_user="""
        def test_config(mlwarden_config):
            assert mlwarden_config.checks["evasion"].eps == [0.3]
            assert mlwarden_config.audit.fail_on == "high"

        def test_audit(mlwarden_audit):
            report = mlwarden_audit.report
            assert report.metrics["clean_accuracy"] > 0.9
            assert {c.name for c in report.checks} == {"scan", "accuracy", "evasion"}
            assert set(mlwarden_audit.files) == {"json", "junit"}
    """
    )
    result = pytester.runpytest(*_plugin_args(), "-m", "not mlwarden", "-v")
    result.assert_outcomes(passed=2, deselected=4)


def test_no_config_means_no_items_and_skipped_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_audit(mlwarden_audit):
            raise AssertionError("must be skipped")
    """
    )
    result = pytester.runpytest(*_plugin_args(), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no mlwarden configuration*"])


def test_config_problems_are_one_clear_usage_error(
    pytester: pytest.Pytester, audit_files: tuple[Path, Path]
) -> None:
    missing = pytester.runpytest(*_plugin_args(), "--mlwarden-config", "nope.toml")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*configuration file*nope.toml*does not exist*"])
    model, _ = audit_files
    bad = pytester.makefile(
        ".toml", bad=f'[model]\npath = "{model.as_posix()}"\n[checks.evasion]\nepsilon = 1\n'
    )
    result = pytester.runpytest(*_plugin_args(), "--mlwarden-config", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*checks.evasion*epsilon*unknown key*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_input_errors_fail_every_item_with_one_line(
    pytester: pytest.Pytester, audit_files: tuple[Path, Path]
) -> None:
    """A data file that does not exist stops the audit: each item says why, no traceback."""
    model, _ = audit_files
    toml = pytester.makefile(
        ".toml", mlwarden=_toml(model, pytester.path / "missing.npz", pytester.path / "o")
    )
    result = pytester.runpytest(
        *_plugin_args(), "--mlwarden-config", str(toml), "-k", "accuracy or evasion"
    )
    result.assert_outcomes(failed=2, deselected=2)
    result.stdout.fnmatch_lines(
        ["*mlwarden audit could not run: data source*missing.npz*does not exist*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_plugin_import_is_light() -> None:
    import subprocess

    code = (
        "import sys, mlwarden.testing.plugin, mlwarden.testing; "
        "heavy = ('torch', 'mlwarden.audit', 'mlwarden.config'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
