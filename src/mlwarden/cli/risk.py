"""``mlwarden risk``: questionnaire, threat model, requirements and config skeleton.

No torch here or in `mlwarden.risk`: these commands start in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlwarden.cli.common import FailOnOption, FormatOption, OutputFormat, OutputOption

risk_app = typer.Typer(
    help="Threat modelling before code: answers -> threats (ATLAS, OWASP, NCSC) -> controls.",
    no_args_is_help=True,
)


def _refuse_overwrite(path: Path, force: bool) -> None:
    from mlwarden.core.errors import InputError

    if path.exists() and not force:
        raise InputError(f"'{path}' already exists; pass --force to overwrite it")


@risk_app.command("init")
def init_command(
    output: Path = typer.Option(
        Path("answers.yaml"), "--output", "-o", help="Answers file to write."
    ),
    template: bool = typer.Option(
        False, "--template", help="Write a commented template with example answers; ask nothing."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Answer the risk questionnaire interactively (or write a commented template)."""
    from mlwarden.cli.ui import console
    from mlwarden.risk.questionnaire import answers_to_yaml, parse_answers, template_yaml

    _refuse_overwrite(output, force)
    if template:
        text = template_yaml()
    else:
        data = _ask_all()
        parse_answers(data, source="your answers")  # cannot fail: every answer was validated
        text = answers_to_yaml(data)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(
        f"wrote [bold]{output}[/]; next: mlwarden risk assess {output}",
        highlight=False,
        soft_wrap=True,
    )


def _ask_all() -> dict[str, Any]:
    """Ask every question with Rich prompts; returns nested answers."""
    from rich.prompt import Confirm, Prompt

    from mlwarden.cli.ui import console
    from mlwarden.core.errors import InputError
    from mlwarden.risk.questionnaire import QUESTIONS

    data: dict[str, Any] = {}
    console.print("[bold]mlwarden risk questionnaire[/] - press Enter to accept a [default].\n")
    try:
        for key, q in QUESTIONS.items():
            if key == "version":
                continue
            console.print(f"[bold cyan]{key}[/]: {q.question}", highlight=False)
            if q.why:
                console.print(f"  [dim]{q.why}[/]", highlight=False)
            if q.kind == "bool":
                default = q.default if isinstance(q.default, bool) else False
                value: Any = Confirm.ask("  answer", default=default, console=console)
            elif q.kind == "choice":
                value = Prompt.ask(
                    "  answer",
                    choices=list(q.choices),
                    console=console,
                    default=q.default if q.default is not None else ...,
                )
            elif q.kind == "multi":
                value = _ask_multi(q.choices, console)
            else:
                value = Prompt.ask("  answer", default=str(q.default or ""), console=console)
            section, _, name = key.partition(".")
            data.setdefault(section, {})[name] = value
    except (EOFError, KeyboardInterrupt):
        raise InputError("the questionnaire was interrupted; nothing was written") from None
    return data


def _ask_multi(choices: tuple[str, ...], console: Any) -> list[str]:
    from rich.prompt import Prompt

    while True:
        raw = Prompt.ask(f"  answer (comma-separated: {', '.join(choices)})", console=console)
        values = [v.strip() for v in raw.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if values and not bad:
            return list(dict.fromkeys(values))
        console.print(f"  [red]choose one or more of: {', '.join(choices)}[/]", highlight=False)


@risk_app.command("assess")
def assess_command(
    answers: Path = typer.Argument(..., help="Answers YAML (from `mlwarden risk init`)."),
    rules: Path | None = typer.Option(
        None,
        "--rules",
        help="Custom rules YAML (replaces, or with `extends: builtin` adds to, ours).",
    ),
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = typer.Option("never", "--fail-on", help=FailOnOption.help),
    config_out: Path | None = typer.Option(
        None, "--config-out", help="Also write an mlwarden.toml skeleton that enables the checks."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --config-out if it exists."),
    audit_report: Path | None = typer.Option(
        None,
        "--audit-report",
        help="Mark each control verified / failed / not checked from a saved "
        "`mlwarden audit` JSON report.",
    ),
) -> None:
    """Threat register, security requirements and the checks that verify them."""
    from mlwarden.cli.common import emit_report, fail_threshold
    from mlwarden.risk.engine import assess
    from mlwarden.risk.questionnaire import load_answers
    from mlwarden.risk.register import threat_model_report
    from mlwarden.risk.rules import load_rules
    from mlwarden.risk.skeleton import config_skeleton

    fail_threshold(fail_on)
    if config_out is not None:
        _refuse_overwrite(config_out, force)
    model = assess(load_answers(answers), load_rules(rules) if rules else None)
    if audit_report is not None:
        from mlwarden.risk.verification import load_audit_report, mark_controls

        audit = load_audit_report(audit_report)
        mark_controls(model, audit.checks, audit.findings)
    report = threat_model_report(model, location=str(answers), audited=audit_report is not None)
    if config_out is not None:
        try:
            rel = Path(answers).resolve().relative_to(config_out.resolve().parent)
        except ValueError:
            rel = Path(answers).resolve()
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(config_skeleton(model, rel), encoding="utf-8")
        from mlwarden.cli.ui import err_console

        err_console.print(f"wrote {config_out}", highlight=False, soft_wrap=True)
    if fmt is OutputFormat.text and output is None:
        from mlwarden.cli.common import exit_code_for

        _print_threat_model(report)
        raise typer.Exit(exit_code_for(report, fail_on))
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


_SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def _print_threat_model(report: Any) -> None:
    """The register and the checklist as terminal tables (the generic summary omits tables)."""
    from rich.markup import escape
    from rich.table import Table

    from mlwarden.cli.ui import console

    tables = {t.id: t for t in report.tables}
    register = tables["risk-threat-register"]
    if not register.rows:
        console.print(
            f"[bold]{escape(report.title)}[/]: no threat in the rules applies to these answers.",
            highlight=False,
        )
        return
    col = {name: i for i, name in enumerate(register.columns)}
    view = Table(title=report.title, title_justify="left")
    for name in ("#", "threat", "ATLAS", "OWASP", "L", "I", "risk", "severity"):
        view.add_column(name, justify="right" if name in ("#", "L", "I", "risk") else "left")
    for row in register.rows:
        sev = row[col["severity"]]
        view.add_row(
            str(row[col["rank"]]),
            row[col["title"]],
            row[col["ATLAS"]],
            row[col["OWASP"]],
            str(row[col["likelihood"]]),
            str(row[col["impact"]]),
            str(row[col["risk"]]),
            f"[{_SEVERITY_STYLE.get(sev, '')}]{sev}[/]",
        )
    console.print(view)
    checklist = tables["risk-security-requirements"]
    col = {name: i for i, name in enumerate(checklist.columns)}
    req = Table(title="Security requirements", title_justify="left")
    for name in ("", "control", "requirement", "verify with", "status"):
        req.add_column(name)
    for row in checklist.rows:
        how = row[col["verify with"]] or "review by hand"
        if row[col["gateway"]]:
            how += f" | [gateway] {row[col['gateway']]}"
        status = row[col["status"]]
        style = {"verified": "green", "failed": "bold red"}.get(status, "dim")
        req.add_row(
            escape(row[col["done"]]),
            f"{row[col['control']]}\n{row[col['name']]}",
            escape(row[col["requirement"]]),
            escape(how),
            f"[{style}]{status}[/]",
        )
    console.print(req)
    console.print(
        "[dim]Full report with the reasons behind each score: "
        "--format md|html|json|sarif --output FILE[/]",
        highlight=False,
    )


@risk_app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of the answers file (for editor completion and validation)."""
    import json

    from mlwarden.risk.questionnaire import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@risk_app.command("rules")
def rules_command(
    check: Path | None = typer.Option(None, "--check", help="Validate this rules file and exit."),
) -> None:
    """Print the shipped rules (a starting point for your own), or validate a rules file."""
    from mlwarden.cli.ui import console
    from mlwarden.risk.rules import default_rules_text, load_rules

    if check is None:
        typer.echo(default_rules_text(), nl=False)
        return
    rules = load_rules(check)
    console.print(
        f"{check}: {len(rules.threats)} threats, {len(rules.controls)} controls, all ids valid",
        highlight=False,
    )


@risk_app.command("catalogue")
def catalogue_command(
    query: str = typer.Argument(
        "", help="Filter by id or words in the name (e.g. AML.T0024, poison)."
    ),
) -> None:
    """List the ATLAS, OWASP ML Top 10 and NCSC entries the rules may cite."""
    from rich.table import Table

    from mlwarden.cli.ui import console
    from mlwarden.risk.catalogue import load_catalogue

    cat = load_catalogue()
    table = Table("id", "framework", "name", "mitigates / stage")
    q = query.lower()
    rows = 0
    entries: list[tuple[str, str, str, str]] = []
    entries += [
        (t.id, "ATLAS technique", cat.technique_label(t.id), "") for t in cat.techniques.values()
    ]
    entries += [
        (
            m.id,
            "ATLAS mitigation",
            m.name,
            ", ".join(m.techniques[:6]) + (" ..." if len(m.techniques) > 6 else ""),
        )
        for m in cat.mitigations.values()
    ]
    entries += [(e.id, "OWASP ML Top 10", e.name, "") for e in cat.owasp.values()]
    entries += [(e.id, "NCSC principle", e.name, e.stage) for e in cat.ncsc.values()]
    for row in entries:
        if q and q not in row[0].lower() and q not in row[2].lower():
            continue
        table.add_row(*row)
        rows += 1
    console.print(table)
    console.print(
        f"{rows} entries. MITRE ATLAS {cat.atlas_source.version} (c) MITRE, Apache-2.0.",
        highlight=False,
    )
