"""Options and report output shared by every command that produces a `Report`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from mlwarden.core.finding import FAIL_ON_CHOICES as FAIL_ON_CHOICES
from mlwarden.core.finding import Severity
from mlwarden.core.finding import fail_threshold as fail_threshold
from mlwarden.core.verdict import DEFAULT_FAIL_ON

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mlwarden.core.findings import Report
    from mlwarden.io.dataset import Dataset
    from mlwarden.io.text_data import TextDataset

SettingsT = TypeVar("SettingsT", bound="BaseModel")


class OutputFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    junit = "junit"
    html = "html"
    md = "md"


FormatOption = typer.Option(
    OutputFormat.text, "--format", "-f", help="Report format: text, json, sarif, junit, html, md."
)
OutputOption = typer.Option(
    None, "--output", "-o", help="Write the report to this file instead of standard output."
)
FactoryOption = typer.Option(
    None, "--factory", help="package.module:callable that builds the module for a weights file."
)
AllowOption = typer.Option(
    [],
    "--allow",
    help="An import the model-file scanner may accept (repeatable), e.g. argparse.Namespace.",
)
SpecOption = typer.Option(
    None,
    "--spec",
    help="JSON file with any of the input-spec fields (shape, bounds, class_names, mean/std); "
    "the fields given override what the model file says. Default: \\[spec] of the "
    "configuration, if any.",
)
ConfigOption = typer.Option(
    None,
    "--config",
    "-c",
    help="Configuration file whose \\[spec] and \\[supplychain] apply "
    "(default: ./mlwarden.toml if present).",
)
DeviceOption = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto.")
SeedOption = typer.Option(0, "--seed", help="Seed for every random choice.")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
FailOnOption = typer.Option(
    DEFAULT_FAIL_ON,
    "--fail-on",
    help="Fail (exit 1) when a finding is at or above this severity (info..critical, or never).",
)


def exit_code_for(report: Report, fail_on: str | Severity | None) -> int:
    """The verdict's exit code at ``fail_on``: 1 when it FAILED, else 0."""
    from mlwarden.core.verdict import report_verdict

    return report_verdict(report, fail_on).exit_code


def emit_report(
    report: Report,
    fmt: OutputFormat | str = OutputFormat.text,
    output: Path | None = None,
    fail_on: str | Severity | None = "high",
) -> int:
    """Render ``report`` as ``fmt`` to ``output`` (or stdout) and return the exit code.

    ``text`` prints a Rich summary to the terminal; written to a file, the format comes
    from the file's suffix (``-o report.html`` is HTML, ``.sarif``, ``.xml``, ``.json``,
    ``.md``, ``.txt``) and is Markdown for any other suffix.
    """
    from mlwarden.core.verdict import report_verdict, with_fail_on
    from mlwarden.report import format_for_path, render

    fmt = OutputFormat(fmt)
    # The rendered report states the verdict at this fail_on, and the exit code follows it.
    report = with_fail_on(report, fail_on)
    code = report_verdict(report).exit_code
    if fmt is OutputFormat.text:
        if output is None:
            from mlwarden.cli.ui import console
            from mlwarden.report import print_report

            print_report(report, console)
            return code
        fmt = OutputFormat(format_for_path(output) or OutputFormat.md.value)
    text = render(report, fmt.value)
    if output is None:
        typer.echo(text)
    else:
        output = Path(output)
        if output.parent and not output.parent.exists():
            output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    return code


def load_subject(
    model: str,
    data: str | None,
    *,
    factory: str | None = None,
    spec: Path | None = None,
    config: Path | None = None,
    device: str = "auto",
    allow: list[str] | tuple[str, ...] = (),
    samples: int | None = None,
    label_column: str = "label",
    text: bool = False,
    text_column: str = "text",
) -> tuple[Any, Dataset | TextDataset | None]:
    """The model of a command (scanned before loading) and its data, validated against its spec.

    The spec is what the model file says with the fields of ``--spec`` (else of ``[spec]``
    in the configuration) over it (`mlwarden.core.spec.complete_spec`). Without ``data``
    only the model loads. A command that handles text models passes ``text=True``: a text
    model's data is then labelled text (`mlwarden.audit.text.labelled_text`).
    """
    from mlwarden.config import resolve_spec
    from mlwarden.core.contract import require
    from mlwarden.core.errors import DataError
    from mlwarden.io.data import load_data
    from mlwarden.io.models import load_model
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    override = resolve_spec(spec, config)
    policy = policy_from_config(config) if config is not None else None  # else ./mlwarden.toml
    with using_policy(policy):
        loaded = load_model(
            model, factory=factory, spec=override, device=device, allow=tuple(allow)
        )
    from mlwarden.core.contract import takes_text

    if text and takes_text(loaded):
        if data is None:
            return loaded, None
        from mlwarden.audit.text import labelled_text

        texts = labelled_text(data, loaded, text_column=text_column, label_column=label_column)
        return loaded, texts.take(samples) if samples is not None else texts
    # Other commands work on tensor models so far; a text model gets the contract's message.
    require(
        loaded,
        (),
        by="this command",
        hint="text models load through mlwarden.io.load_model so far; see docs/text.md",
    )
    if data is None:
        return loaded, None
    dataset = load_data(data, spec=loaded.spec, label_column=label_column)
    if samples is not None:
        dataset = dataset.take(samples)
    if len(dataset) == 0:
        raise DataError(f"data set '{data}' is empty")
    return loaded, dataset
