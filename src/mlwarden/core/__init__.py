"""Core contracts: specs, classifiers, oracles, findings, reports, errors.

Torch-free names are imported eagerly; torch-backed ones (`Classifier`,
`Oracle`, ...) load on first access so that light commands stay fast.
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
from mlwarden.core.findings import (
    Artefact,
    CheckResult,
    Figure,
    Finding,
    ImageData,
    Report,
    Series,
    Severity,
    Table,
)
from mlwarden.core.progress import ProgressCallback, null_progress
from mlwarden.core.spec import InputSpec, SpecOverride

_LAZY = {
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
