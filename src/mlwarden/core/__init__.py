"""Core contracts: specs, classifiers, oracles, findings, reports, errors.

Errors, `Finding` and `Severity` are imported eagerly; pydantic models (`Report`,
`InputSpec`, ...) and torch-backed names (`Classifier`, `Oracle`, ...) load on first
access, so that light commands (``mlwarden scan``) stay fast.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports
from mlwarden.core.errors import (
    ConfigError,
    DataError,
    DependencyError,
    InputError,
    MlwardenError,
    ModelLoadError,
    OracleError,
    ParameterError,
    UnsafeArtefactError,
)
from mlwarden.core.finding import Finding, Severity
from mlwarden.core.progress import ProgressCallback, null_progress

_LAZY = {
    # pydantic models: imported on first use, so that the scanner's path starts fast
    "Artefact": "mlwarden.core.findings",
    "CheckResult": "mlwarden.core.findings",
    "Figure": "mlwarden.core.findings",
    "ImageData": "mlwarden.core.findings",
    "Report": "mlwarden.core.findings",
    "Series": "mlwarden.core.findings",
    "Table": "mlwarden.core.findings",
    "InputSpec": "mlwarden.core.spec",
    "SpecOverride": "mlwarden.core.spec",
    # torch-backed
    "Classifier": "mlwarden.core.classifier",
    "Oracle": "mlwarden.core.oracle",
    "ClassifierOracle": "mlwarden.core.oracle",
    "BudgetExhausted": "mlwarden.core.oracle",
    "LabelOnlyOracle": "mlwarden.core.oracle",
    "resolve_device": "mlwarden.core.device",
    "seed_everything": "mlwarden.core.seeding",
    "make_generator": "mlwarden.core.seeding",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Artefact",
    "BudgetExhausted",
    "CheckResult",
    "Classifier",
    "ClassifierOracle",
    "ConfigError",
    "DataError",
    "DependencyError",
    "Figure",
    "Finding",
    "ImageData",
    "InputError",
    "InputSpec",
    "LabelOnlyOracle",
    "MlwardenError",
    "ModelLoadError",
    "Oracle",
    "OracleError",
    "ParameterError",
    "ProgressCallback",
    "Report",
    "Series",
    "Severity",
    "SpecOverride",
    "Table",
    "UnsafeArtefactError",
    "make_generator",
    "null_progress",
    "resolve_device",
    "seed_everything",
]
