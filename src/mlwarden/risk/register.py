"""Turn a `ThreatModel` into a `Report`: threat register, requirements checklist, findings.

Renderers (`mlwarden.report`) format it as Markdown, HTML, JSON or SARIF; this
module only decides the content. Each threat is one `Finding` whose severity is
the band of its risk score (or its residual severity after an audit) and which
carries its ATLAS and OWASP ids, so SARIF consumers see recognised ids.
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.findings import Finding, Report, Severity, Table
from mlwarden.risk.engine import AssessedThreat, ThreatModel
from mlwarden.risk.verification import residual_severity

STAGE_ORDER = ("design", "development", "deployment", "operation", "end-of-life")


def _answer_text(answers: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list):
            return "[" + ", ".join(map(str, v)) + "]"
        return str(v)

    return ", ".join(f"{k} = {fmt(v)}" for k, v in answers.items())


def threat_finding(
    threat: AssessedThreat,
    model: ThreatModel,
    *,
    location: str | None,
    audited: bool,
    unverified: Severity = Severity.LOW,
) -> Finding:
    cat = model.catalogue
    names = "; ".join(f"{a} {cat.technique_label(a)}" for a in threat.rule.atlas)
    controls = ", ".join(f"{c} {cat.mitigations[c].name}" for c in threat.rule.controls)
    detail = (
        f"{threat.rule.description} Applies because {_answer_text(threat.triggered_by)}. "
        f"ATLAS: {names}. Risk {threat.risk} = likelihood {threat.likelihood.value} x impact "
        f"{threat.impact.value}. Controls: {controls}."
    )
    severity = threat.severity
    evidence: dict[str, Any] = {
        "likelihood": threat.likelihood.value,
        "impact": threat.impact.value,
        "risk": threat.risk,
        "inherent_severity": threat.severity.value,
        "likelihood_reasons": list(threat.likelihood.reasons),
        "impact_reasons": list(threat.impact.reasons),
        "triggered_by": threat.triggered_by,
        "controls": list(threat.rule.controls),
        "ncsc": list(threat.rule.ncsc),
        "stage": threat.rule.stage,
    }
    if audited:
        statuses = {
            c: model.control_status.get(c, ("not checked", ""))[0] for c in threat.rule.controls
        }
        evidence["control_status"] = statuses
        severity = residual_severity(threat, model, unverified)
        failed = [c for c, s in statuses.items() if s == "failed"]
        open_ = [c for c, s in statuses.items() if s == "not checked"]
        if failed:
            detail += f" Failed controls: {', '.join(failed)}."
        elif open_:
            detail += f" Not yet checked: {', '.join(open_)}."
        else:
            detail += " Every control verified by the audit."
    return Finding(
        id=threat.rule.finding_id,
        title=threat.rule.title,
        severity=severity,
        detail=detail,
        check="risk",
        evidence=evidence,
        atlas=list(threat.rule.atlas),
        owasp=list(threat.rule.owasp),
        location=location,
    )


def register_table(
    model: ThreatModel, audited: bool = False, unverified: Severity = Severity.LOW
) -> Table:
    columns = [
        "rank",
        "threat",
        "title",
        "ATLAS",
        "OWASP",
        "NCSC",
        "likelihood",
        "impact",
        "risk",
        "severity",
        "controls",
    ]
    if audited:
        columns.append("residual")
    rows = []
    for rank, t in enumerate(model.threats, 1):
        row: list[Any] = [
            rank,
            t.id,
            t.rule.title,
            ", ".join(t.rule.atlas),
            ", ".join(t.rule.owasp),
            ", ".join(t.rule.ncsc),
            t.likelihood.value,
            t.impact.value,
            t.risk,
            t.severity.value,
            ", ".join(t.rule.controls),
        ]
        if audited:
            row.append(residual_severity(t, model, unverified).value)
        rows.append(row)
    return Table(
        id="risk-threat-register",
        title="Threat register (risk = likelihood x impact)",
        columns=columns,
        rows=rows,
    )


def requirements_table(model: ThreatModel) -> Table:
    rows = []
    for c in model.controls:
        status, reason = model.control_status.get(c.id, ("not checked", ""))
        rows.append(
            [
                "[x]" if status == "verified" else "[ ]",
                c.id,
                c.name,
                c.rule.requirement,
                ", ".join(c.threats),
                ", ".join(f"mlwarden {cmd}" for cmd in c.rule.commands),
                ", ".join(c.rule.audit_checks),
                ", ".join(c.rule.gateway),
                status,
                reason,
            ]
        )
    return Table(
        id="risk-security-requirements",
        title="Security requirements checklist",
        columns=[
            "done",
            "control",
            "name",
            "requirement",
            "threats",
            "verify with",
            "audit checks",
            "gateway",
            "status",
            "note",
        ],
        rows=rows,
    )


def ncsc_table(model: ThreatModel) -> Table:
    cited: dict[str, set[str]] = {}
    for t in model.threats:
        for n in t.rule.ncsc:
            cited.setdefault(n, set()).add(t.id)
    for c in model.controls:
        for n in c.rule.ncsc:
            cited.setdefault(n, set()).add(c.id)
    entries = sorted(
        (model.catalogue.ncsc[n] for n in cited),
        key=lambda e: (STAGE_ORDER.index(e.stage), e.id),
    )
    rows = [[e.stage, e.id, e.name, ", ".join(sorted(cited[e.id]))] for e in entries]
    return Table(
        id="risk-ncsc-principles",
        title="NCSC principles by lifecycle stage",
        columns=["stage", "principle", "name", "threats and controls"],
        rows=rows,
    )


def add_threat_model(
    report: Report,
    model: ThreatModel,
    *,
    location: str | None = None,
    audited: bool = False,
    unverified: Severity = Severity.LOW,
) -> Report:
    """Write the threat register, checklist, NCSC table, findings and metrics into ``report``."""
    report.add(
        *(
            threat_finding(t, model, location=location, audited=audited, unverified=unverified)
            for t in model.threats
        )
    )
    report.tables += [
        register_table(model, audited, unverified),
        requirements_table(model),
        ncsc_table(model),
    ]
    m = report.metrics
    m["risk_threats"] = len(model.threats)
    m["risk_max"] = max((t.risk for t in model.threats), default=0)
    report.headline.append("risk_max")
    for sev in (Severity.CRITICAL, Severity.HIGH):
        m[f"risk_{sev.value}"] = sum(t.severity is sev for t in model.threats)
    m["risk_controls"] = len(model.controls)
    if audited:
        statuses = [model.control_status.get(c.id, ("not checked", ""))[0] for c in model.controls]
        m["risk_controls_verified"] = statuses.count("verified")
        m["risk_controls_failed"] = statuses.count("failed")
        m["risk_controls_not_checked"] = statuses.count("not checked")
        report.headline.append("risk_controls_failed")
    a = model.answers
    subject = {
        "system": a.system.name,
        "risk_owner": a.system.owner or None,
        "answers": location,
        "atlas_version": model.catalogue.atlas_source.version,
        "questionnaire_version": a.version,
    }
    for key, value in subject.items():
        if audited and not key.startswith("risk_"):
            key = f"risk_{key}"  # the audit's subject is the model, not the questionnaire
        report.subject.setdefault(key, value)
    return report


def threat_model_report(
    model: ThreatModel,
    *,
    location: str | None = None,
    audited: bool = False,
    unverified: Severity = Severity.LOW,
) -> Report:
    """A fresh report holding the threat model of ``model`` (``mlwarden risk assess``).

    ``audited=True`` when ``model.control_status`` was filled from an audit's results.
    """
    report = Report(title=f"Threat model: {model.answers.system.name}")
    return add_threat_model(
        report, model, location=location, audited=audited, unverified=unverified
    )
