"""Risk assessment: questionnaire -> threat register -> controls -> the checks that verify them.

>>> from mlwarden.risk import load_answers, assess, threat_model_report, config_skeleton
>>> model = assess(load_answers("answers.yaml"))
>>> [t.id for t in model.threats]               # ranked by likelihood x impact
>>> report = threat_model_report(model)          # render with mlwarden.report.render
>>> print(config_skeleton(model))                # mlwarden.toml that switches on the checks

Threats cite MITRE ATLAS (technique and mitigation ids), the OWASP Machine Learning
Security Top 10 and the UK NCSC principles for the security of machine learning;
the catalogue and the rules are data files under ``mlwarden/risk/data``. Nothing
here imports torch.
"""

from mlwarden.risk.catalogue import Catalogue, load_catalogue
from mlwarden.risk.engine import AssessedThreat, RequiredControl, ThreatModel, assess, severity_for
from mlwarden.risk.questionnaire import (
    QUESTIONS,
    SCHEMA_VERSION,
    Answers,
    load_answers,
    parse_answers,
    template_yaml,
)
from mlwarden.risk.register import add_threat_model, threat_model_report
from mlwarden.risk.rules import RuleSet, load_rules
from mlwarden.risk.skeleton import config_skeleton
from mlwarden.risk.verification import mark_controls, residual_severity

__all__ = [
    "QUESTIONS",
    "SCHEMA_VERSION",
    "Answers",
    "AssessedThreat",
    "Catalogue",
    "RequiredControl",
    "RuleSet",
    "ThreatModel",
    "add_threat_model",
    "assess",
    "config_skeleton",
    "load_answers",
    "load_catalogue",
    "load_rules",
    "mark_controls",
    "parse_answers",
    "residual_severity",
    "severity_for",
    "template_yaml",
    "threat_model_report",
]
