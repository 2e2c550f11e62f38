"""``mlwarden attack extraction`` and the ``extraction`` check: one settings model, one runner.

For the same settings both front doors must report the same findings and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# A tiny thief: 64 queries, a copy trained 3 epochs; 0.2 agreement is surely reached.
SETTINGS = {"budget": 64, "strategy": "natural", "access": "labels", "epochs": 3,
            "max_agreement": 0.2}
SEED = 5


def test_cli_and_audit_check_report_the_same(cli, digits_cnn_pt2: Path, tmp_path: Path) -> None:
    flags = [x for k, v in SETTINGS.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    res = cli(
        "attack", "extraction", "-m", str(digits_cnn_pt2), "-d", "digits", *flags,
        "--seed", str(SEED), "--device", "cpu", "--format", "json", "--fail-on", "never",
        "--no-progress",
    )
    assert res.code == 0, res.err
    from_cli = json.loads(res.out)

    out = tmp_path / "report"
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items())
    config = tmp_path / "mlwarden.toml"
    config.write_text(
        f"[model]\npath = {json.dumps(str(digits_cnn_pt2))}\ndevice = \"cpu\"\n\n"
        '[data]\nsource = "digits"\n\n'
        f"[audit]\nseed = {SEED}\nformats = [\"json\"]\noutput_dir = {json.dumps(str(out))}\n"
        'fail_on = "never"\n\n'
        f"[checks.extraction]\n{table}\n",
        encoding="utf-8",
    )
    audit = cli("audit", "--config", str(config), "--check", "extraction", "--no-progress")
    assert audit.code == 0, audit.err
    from_audit = json.loads((out / "report.json").read_text(encoding="utf-8"))

    def summary(report: dict) -> tuple[list[tuple[str, str]], dict]:  # type: ignore[type-arg]
        return [(f["id"], f["severity"]) for f in report["findings"]], report["metrics"]

    findings, metrics = summary(from_cli)
    assert findings == [("MLW-EXT-001", "high")]
    assert summary(from_audit) == (findings, metrics)
    assert metrics["extraction.natural.labels.queries"] == 64
    assert 0.2 <= metrics["extraction.natural.labels.agreement"] <= 1


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--access", "logits"], "--access"),
        (["--strategy", "psychic"], "--strategy"),
        (["--budget", "0"], "--budget"),
        (["--max-agreement", "1.5"], "--max-agreement"),
    ],
)
def test_cli_bad_settings_name_their_flag(
    cli, digits_cnn_pt2: Path, args: list[str], flag: str
) -> None:
    res = cli("attack", "extraction", "-m", str(digits_cnn_pt2), "-d", "digits", *args)
    assert res.code == 2
    assert flag in res.err and "Traceback" not in res.err


def test_url_needs_a_spec(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./mlwarden.toml with a [spec]
    res = cli("attack", "extraction", "--url", "http://127.0.0.1:9", "-d", "digits")
    assert res.code == 2 and "--spec" in res.err
