"""One front door: ``mlwarden evaluate robustness`` and ``mlwarden audit`` with the same
``[checks.evasion]`` settings give the same findings, metrics, figures, tables and exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def _flags(settings: dict[str, Any]) -> list[str]:
    """``--key value`` for each setting (lists repeat the flag, booleans are switches)."""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """What must agree: everything but wall-clock times."""
    return {
        "findings": sorted((f["id"], f["severity"], f["check"]) for f in report["findings"]),
        "metrics": {k: v for k, v in report["metrics"].items() if not k.endswith(".seconds")},
        "figures": [(f["id"], f["series"]) for f in report["figures"]],
        "tables": {t["id"]: t["rows"] for t in report["tables"] if "cost" not in t["id"]},
        "costs": {
            t["id"]: [row[:-1] for row in t["rows"]]  # last column: seconds
            for t in report["tables"]
            if "cost" in t["id"]
        },
    }


@pytest.mark.parametrize(
    "settings",
    [
        # the defaults of both (preset, threshold) with small budgets
        {"eps": [0.05, 0.2], "steps": 3, "queries": 40, "samples": 20},
        # a threshold that fails, and the sanity checks
        {
            "preset": "fast",
            "eps": [0.1],
            "steps": 4,
            "samples": 24,
            "min_robust_accuracy": 0.95,
            "sanity": True,
        },
    ],
    ids=["defaults", "fast-sanity"],
)
def test_command_and_audit_check_agree(
    cli, digits_cnn_pt2: Path, tmp_path: Path, settings: dict[str, Any]
) -> None:
    command = cli(
        "evaluate", "robustness", "-m", str(digits_cnn_pt2), "-d", "digits", *_flags(settings),
        "--format", "json", "--no-progress",
    )  # fmt: skip
    assert command.code in (0, 1), command.err
    table = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.items())
    config = tmp_path / "mlwarden.toml"
    config.write_text(
        f'[model]\npath = "{digits_cnn_pt2.as_posix()}"\n[data]\nsource = "digits"\n'
        f'[audit]\noutput_dir = "{tmp_path.as_posix()}"\nformats = ["json"]\n'
        f"[checks.evasion]\n{table}\n",
        encoding="utf-8",
    )
    audit = cli("audit", "--config", str(config), "--no-progress")
    assert audit.code == command.code, audit.err
    from_command = _comparable(json.loads(command.out))
    from_audit = _comparable(json.loads((tmp_path / "report.json").read_text()))
    assert from_command == from_audit
    assert from_command["findings"]  # the comparison has something to compare
    if settings.get("sanity"):
        assert any(k.startswith("evasion.sanity.") for k in from_command["metrics"])
        assert ("MLW-EVA-010", "high", "evasion") in from_command["findings"]
    else:
        assert "evasion.standard.linf.robust_accuracy@0.2" in from_command["metrics"]
